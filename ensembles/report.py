"""The results report: `python -m ensembles.report --tag T [--artifacts DIR] [--readme]`.

Reads the `metrics.json` files of stages 05-07 and the stage 08 record under `artifacts/<T>/`,
and says what the numbers were made from (00_raw/raw.json, 03_hash/field_spec.json, the models'
presets). Writes `artifacts/<T>/REPORT.md`: one row per trained model (validation logloss, AUC,
relative information gain, examples/s, parameters, wall time, the calibration chosen and its
effect, links to the learning curve and reliability diagram), one row per tuned model (stage 05's
search, `models/tune.py`: the default and the best trial on the tuning slice, the default and the
tuned model on validation, the best setting, the trial plot), one row per blend (the candidate
chosen, each member's weight, the held-out logloss of each blend candidate) and the submission
written.
With `--readme` the same tables replace the text between the markers
`<!-- results:begin -->` and `<!-- results:end -->` in README.md, with links rooted at the repo.
./run.sh refreshes REPORT.md after every run of a stage from 05 on; README.md changes only on
request. The report is a view, part of no stage's code: no stage imports it, so a change here
never makes a stage stale.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from pathlib import Path

import pandas as pd

from preprocessing import schema
from pipeline import settings
from pipeline.atomic import replacing
from pipeline.paths import REPO_ROOT, artifacts_root, stage_dir

REPORT_FILE = "REPORT.md"
BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"
# The model table's columns read from 05_train's metrics.json, and the numbers' formats.
MODEL_METRICS = {"valid logloss": "valid_logloss", "AUC": "valid_auc",
                 "RIG": "relative_information_gain", "examples/s": "examples_per_second",
                 "parameters": "parameter_count", "wall s": "wall_seconds"}
MODEL_FORMATS = {"valid logloss": "{:.5f}", "AUC": "{:.4f}", "RIG": "{:.4f}",
                 "examples/s": "{:,.0f}", "parameters": "{:,.0f}", "wall s": "{:.1f}",
                 "calibrated logloss": "{:.5f}"}
# The blend candidates in the held-out column; "select" is left out of blends written before it
# existed (and of `weighted` blends, which do not fit it).
BLEND_CANDIDATES = ("weighted", "average", "single")


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def number(value, digits: int | str) -> str:
    """`value` with `digits` decimals (or in the format `digits`), a dash when missing."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(digits, int) else digits.format(value)


def link(text: str, path: Path, tag_dir: Path, prefix: str) -> str:
    return f"[{text}]({prefix}{path.relative_to(tag_dir).as_posix()})" if path.exists() else ""


def data_description(tag: str) -> str:
    """What the tag's numbers were made from: the raw input, the split and the model presets."""
    raw = read_json(stage_dir(tag, "00_raw") / "raw.json") or {}
    spec = read_json(stage_dir(tag, "03_hash") / "field_spec.json") or {}
    parts = []
    if raw.get("source") == "synthetic":
        parts.append("synthetic Criteo-like data (`preprocessing/synthetic/`)")
    elif raw.get("source") == schema.CRITEO_1TB:
        parts.append(f"the Criteo 1TB logs, {len(raw['days'])} days ({raw['days'][0]} .. "
                     f"{raw['days'][-1]}; the last is the validation day, no test set)")
    elif raw:
        files = ", ".join(f"`{Path(path).name}` ({raw['rows'][split]:,} rows)"
                          for split, path in raw["inputs"].items())
        extent = "the full Kaggle files" if raw.get("full_size") else "a sample, not the full " \
            "Kaggle files"
        parts.append(f"real Criteo rows: {files}, {extent}")
    if spec:
        rows = spec["rows"]
        parts.append(f"time-ordered split train {rows['train']:,} / valid {rows['valid']:,} / "
                     f"test {rows['test']:,} rows, {spec['total_vocabulary_size']:,} feature ids "
                     f"(min count {spec['min_count']['cat']})")
    presets = {}
    trained = stage_dir(tag, "05_train")
    for path in sorted(trained.glob("*/config.resolved.json")) if trained.is_dir() else []:
        preset = json.loads(path.read_text()).get("preset", "?")
        presets.setdefault(preset, []).append(path.parent.name)
    if presets:
        parts.append("model presets: " + "; ".join(
            preset if len(presets) == 1 else f"{preset} ({', '.join(ids)})"
            for preset, ids in sorted(presets.items())))
    return "Data: " + "; ".join(parts) + "." if parts else "Data: unknown (no 00_raw/03_hash)."


def model_rows(tag: str, prefix: str) -> list[dict]:
    """One row per trained model, the best validation logloss first."""
    tag_dir = artifacts_root() / tag
    trained = stage_dir(tag, "05_train")
    rows = []
    for folder in sorted(trained.iterdir()) if trained.is_dir() else []:
        model_metrics = read_json(folder / "metrics.json")
        if not model_metrics or folder.name.startswith("."):
            continue
        calibration = stage_dir(tag, "06_calibrate", folder.name)
        calibrated = read_json(calibration / "metrics.json") or {}
        before = calibrated.get("before", {})
        ece = "–"
        if calibrated:
            ece = (f"{number(before.get('expected_calibration_error'), 4)} → "
                   f"{number(calibrated.get('expected_calibration_error'), 4)}")
        plots = [link("learning curve", folder / "learning_curve.png", tag_dir, prefix),
                 link("reliability", calibration / "reliability.png", tag_dir, prefix)]
        fingerprint = tuned_fingerprint(tag, folder.name)
        tuned = fingerprint is not None and \
            (read_json(folder / "manifest.json") or {}).get("fingerprint") == fingerprint
        rows.append({"model": folder.name + (" (tuned)" if tuned else ""),
                     **{column: model_metrics.get(key) for column, key in MODEL_METRICS.items()},
                     "calibration": calibrated.get("method", "–"),
                     "calibrated logloss": calibrated.get("valid_logloss"),
                     "ECE before → after": ece,
                     "plots": " ".join(plot for plot in plots if plot)})
    if not rows:
        return []
    frame = pd.DataFrame(rows).sort_values("valid logloss", kind="stable", na_position="last")
    for column, form in MODEL_FORMATS.items():
        frame[column] = [number(value, form) for value in frame[column]]
    return frame.to_dict("records")


def markdown_table(rows: list[dict]) -> list[str]:
    """The lines of a Markdown table of `rows` (dicts of column -> cell text, the columns in the
    first row's order), cells unpadded as the README has always shown them."""
    frame = pd.DataFrame(rows, dtype=str)
    return ["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|",
            *("| " + " | ".join(cells) + " |" for cells in frame.itertuples(index=False))]


def tuned_fingerprint(tag: str, model_id: str) -> str | None:
    """The fingerprint 05_train/<id> has when it holds the tuned model (05_tune's best.json)."""
    best = read_json(stage_dir(tag, "05_tune", model_id) / "best.json")
    return best.get("tuned_fingerprint") if best else None


def tune_rows(tag: str, prefix: str) -> list[dict]:
    """One row per study of 05_tune: the untuned config (its first trial) beside the best trial
    on the tuning slice (the training split's tail), and beside the tuned model on validation."""
    tag_dir = artifacts_root() / tag
    folder = stage_dir(tag, "05_tune")
    rows = []
    for study_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        best = read_json(study_dir / "best.json")
        if not best or study_dir.name.startswith("."):
            continue
        trained = stage_dir(tag, "05_train", study_dir.name)
        manifest = read_json(trained / "manifest.json") or {}
        tuned = "not trained"
        if manifest.get("fingerprint") == best["tuned_fingerprint"]:
            tuned = number((read_json(trained / "metrics.json") or {}).get("valid_logloss"), 5)
        default = best["default"]
        default_valid = "not run" if default["valid_logloss"] is None else \
            number(default["valid_logloss"], 5)
        counts = best["trials"]
        setting = ", ".join(f"{key.split('.')[-1]} {_setting(value)}"
                            for key, value in best["values"].items())
        rows.append({
            "tuned model": study_dir.name,
            "trials: complete / pruned / failed (budget)":
                f"{counts['complete']} / {counts['pruned']} / {counts['failed']} "
                f"({counts['budget']}, ended by {best['ended_by']})",
            "tuning slice: default → best":
                f"{number(default['tuning_logloss'], 5)} → {number(best['tuning_logloss'], 5)} "
                f"(trial {best['best_trial']})",
            "validation: default → tuned": f"{default_valid} → {tuned}",
            "best trial's setting": setting,
            "plot": link("trials", study_dir / "trials.png", tag_dir, prefix)})
    return rows


def _setting(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and value and len(set(value)) == 1:
        return f"{value[0]} x {len(value)}"
    return str(value)


def blend_rows(tag: str, prefix: str) -> list[dict]:
    tag_dir = artifacts_root() / tag
    folder = stage_dir(tag, "07_ensemble")
    rows = []
    for blend_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        result = read_json(blend_dir / "metrics.json")
        if not result or blend_dir.name.startswith("."):
            continue
        # Every member's weight, the largest first (ties in member order), then a nonzero bias.
        weights = ", ".join(f"{member} {weight:.2f}" for member, weight in
                            sorted(result["weights"].items(), key=lambda item: -item[1]))
        if result.get("bias"):
            weights += f", bias {result['bias']:+.2f}"
        best = min(result["member_metrics"].items(), key=lambda item: item[1]["valid_logloss"])
        method = result["method"]
        if result.get("single_member"):
            method += f" {result['single_member']}"
        held_out = result.get("held_out_logloss") or {}
        rows.append({
            "ensemble": result["name"], "method (source)": f"{method} ({result['source']})",
            "weights": weights, "valid logloss": number(result["valid_logloss"], 5),
            "AUC": number(result["valid_auc"], 4),
            "RIG": number(result["relative_information_gain"], 4),
            "plain average": number(result["average"]["valid_logloss"], 5),
            "best member": f"{best[0]} {best[1]['valid_logloss']:.5f}",
            "held-out: weighted / average / single / select": " / ".join(
                number(held_out.get(key), 5) for key in
                BLEND_CANDIDATES + (("select",) if "select" in held_out else ())),
            "plots": link("reliability", blend_dir / "reliability.png", tag_dir, prefix)})
    return rows


def render(tag: str, prefix: str = "") -> str:
    """The Markdown tables; links are `prefix` + path relative to artifacts/<tag>/."""
    intro = (f"Artifact tree `{tag}`, generated {datetime.date.today().isoformat()} by "
             f"`python -m ensembles.report --tag {tag}`. Validation logloss and AUC on the "
             "time-ordered validation split; RIG = relative information gain over predicting the "
             "training click rate. Calibrated and blended logloss are cross-fitted on two halves "
             "of the validation split (honest, see `ensembles/calibrate.py`). Plots link into "
             f"the git-ignored `artifacts/{tag}/` tree, present after a run.")
    models = model_rows(tag, prefix)
    lines = [intro, "", data_description(tag), "",
             *(markdown_table(models) if models else ["No trained models in 05_train."])]
    tuned = tune_rows(tag, prefix)
    if tuned:
        lines += ["", "Tuned models (`./run.sh --only 05 --tune ID`): trials train on the training "
                  "split less its last part and are scored on that part (the tuning slice); the "
                  "validation split never served the search. The default is the untuned config "
                  "(the study's first trial; on validation, the model published before tuning).",
                  "", *markdown_table(tuned)]
    blends = blend_rows(tag, prefix)
    if blends:
        lines += ["", *markdown_table(blends)]
    submission = read_json(stage_dir(tag, "08_submit") / "submission.json")
    if submission:
        lines += ["", (f"Submission: `{submission['file']}` from `{submission['source']}`, "
                       f"{submission['rows']:,} rows, validated; validation logloss "
                       f"{number(submission.get('valid_logloss'), 5)}.")]
    return "\n".join(lines) + "\n"


def write_report(tag: str) -> Path:
    path = artifacts_root() / tag / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary:
        temporary.write_text(f"# Results: {tag}\n\n" + render(tag))
    return path


def update_readme(tag: str, readme: Path = REPO_ROOT / "README.md") -> None:
    """Replaces the text between the results markers in `readme` with the tables."""
    text = readme.read_text()
    if text.count(BEGIN_MARKER) != 1 or text.count(END_MARKER) != 1 or \
            text.index(BEGIN_MARKER) > text.index(END_MARKER):
        raise ValueError(f"{readme}: needs one {BEGIN_MARKER} line followed by one {END_MARKER}")
    tag_dir = artifacts_root() / tag
    prefix = os.path.relpath(tag_dir, readme.parent).replace(os.sep, "/") + "/"
    head, rest = text.split(BEGIN_MARKER)
    _, tail = rest.split(END_MARKER)
    with replacing(readme) as temporary:
        temporary.write_text(f"{head}{BEGIN_MARKER}\n{render(tag, prefix)}{END_MARKER}{tail}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="demo", help="artifact tree: <artifacts>/<tag>/")
    settings.add_artifacts_option(parser)
    parser.add_argument("--readme", action="store_true",
                        help="also replace the tables between the markers in README.md")
    args = parser.parse_args(argv)
    settings.apply_artifacts(args)
    print(f"wrote {write_report(args.tag)}")
    if args.readme:
        try:
            update_readme(args.tag)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        print(f"updated {REPO_ROOT / 'README.md'}")


if __name__ == "__main__":
    main()
