"""`./run.sh predict` and `./run.sh export` (python -m criteo_pnn.cli predict|export ...).

predict: raw Criteo rows in (TSV with or without the label column, .gz, or a Kaggle CSV with its
Id column), `Id,Predicted` out: the Id is 60000000 + row for unlabelled TSV rows and
10000000 + row for labelled ones, as stage 03 numbers them, or the CSV's own Id (stage 00's
conversion checks it). Streamed in the parser's chunks, so memory stays bounded whatever the file
size; progress on stderr (tqdm) and a closing line with rows/s. Scores with a tag's source
(default: what its submission used) or a bundle (`--bundle DIR`).

export: writes the self-contained bundle folder of a tag's source (criteo_pnn/bundle.py).

Bad rows follow stage 00's rules: an error naming file and line, or with `--set
raw.on_bad_row=skip` a counted row kept in place with the training click rate (more than
raw.max_skipped_fraction of the rows is an error). Known failures end in one `error:` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import config as config_lib
from pipeline import errors, paths, settings

RAW_KEYS = ("on_bad_row", "max_skipped_fraction")


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", help="artifact tree <artifacts>/<tag>/")
    settings.add_artifacts_option(parser)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--model", metavar="ID", help="one model: its calibrated predictions "
                        "(06_calibrate/ID) when stage 06 built them, else 05_train/ID")
    choice.add_argument("--blend", metavar="NAME", help="a blend: 07_ensemble/NAME")
    choice.add_argument("--source", metavar="STAGE/ID",
                        help="as submit.source: 07_ensemble/NAME, 06_calibrate/ID or 05_train/ID")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="./run.sh", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="score raw rows",
                                  description="Scores raw Criteo rows into Id,Predicted.")
    _add_source(predict)
    predict.add_argument("--bundle", type=Path, metavar="DIR",
                         help="score with this exported bundle instead of a tag")
    predict.add_argument("--input", type=Path, required=True, metavar="FILE",
                         help="raw rows: TSV (39 columns, or 40 with the label first), .gz, or "
                              "Kaggle CSV (Id,[Label,]I1..C26)")
    predict.add_argument("--output", type=Path, metavar="FILE",
                         help="Id,Predicted CSV (.gz: gzip); default: stdout")
    predict.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="raw.on_bad_row=error|skip, raw.max_skipped_fraction=F (default: "
                              "the tag's own)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument("--verbose", action="store_true",
                         help="keep TensorFlow's start-up log lines (dropped by default)")
    export = commands.add_parser("export", help="write a self-contained bundle folder",
                                 description="Writes a tag's source as a bundle folder.")
    _add_source(export)
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="bundle folder")
    export.add_argument("--force", action="store_true", help="replace an existing --out")
    return main


def tag_dir(args) -> Path:
    if not args.tag:
        raise errors.InputError("--tag NAME is required (the artifact tree to score with)")
    settings.apply_artifacts(args)
    return paths.artifacts_root() / args.tag


def source_name(args) -> str | None:
    return args.model or args.blend or args.source


def raw_settings(overrides: list[str]) -> dict:
    """{"on_bad_row": ..., "max_skipped_fraction": ...} given by --set raw.KEY=VALUE."""
    values = {}
    for override in overrides:
        tree = config_lib.parse_override(override)
        section = tree.get("raw")
        if set(tree) != {"raw"} or not isinstance(section, dict) or not set(section) <= \
                set(RAW_KEYS):
            raise errors.InputError(f"--set {override}: predict takes raw.on_bad_row and "
                                    f"raw.max_skipped_fraction only")
        values.update(section)
    settings.RawConfig(**values)  # its own checks
    return values


def predict(args) -> int:
    import criteo_pnn

    from pipeline.run import quiet_native_logs

    raw = raw_settings(args.set)
    if args.bundle is not None and args.tag:
        raise errors.InputError("--bundle and --tag: give one of them")
    with quiet_native_logs(args.verbose):  # model loading starts TensorFlow
        predictor = criteo_pnn.load(args.bundle if args.bundle is not None else tag_dir(args),
                                    source_name(args))
    summary = predictor.predict_file(args.input, args.output, raw.get("on_bad_row"),
                                     raw.get("max_skipped_fraction"),
                                     progress=False if args.no_progress else None)
    where = f"bundle {args.bundle}" if args.bundle else f"tag {predictor.tag}"
    print(f"[predict] {summary['rows']:,} rows of {summary['input']} scored with "
          f"{predictor.source} ({where}) in {summary['seconds']:.1f} s, "
          f"{summary['rows_per_second']:,.0f} rows/s -> {summary['output']}", file=sys.stderr)
    if summary["padded_rows"]:
        print(f"[predict] {summary['padded_rows']:,} rows had trimmed trailing fields, padded "
              "with empty ones", file=sys.stderr)
    if summary["bad_rows"]:
        print(f"[predict] {summary['bad_rows']:,} bad rows kept in place with the training click "
              f"rate {summary['base_rate']:.6g} (first: {summary['first_bad']})", file=sys.stderr)
    return 0


def export(args) -> int:
    import criteo_pnn

    out = criteo_pnn.export(tag_dir(args), args.out, source_name(args), force=args.force)
    from criteo_pnn import bundle

    manifest = bundle.load_plan(out).manifest
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    print(f"[export] {manifest['source']} of tag {manifest['tag']} -> {out} "
          f"({len(manifest['members'])} member{'s' * (len(manifest['members']) != 1)}: "
          f"{', '.join(member['id'] for member in manifest['members'])}; "
          f"{errors.human_bytes(size)})", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return errors.run(predict if args.command == "predict" else export, args)


if __name__ == "__main__":
    sys.exit(main())
