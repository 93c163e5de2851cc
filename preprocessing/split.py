"""Stage 01: the time-ordered validation split.

Reads: `00_raw/raw.json`. Writes: `01_split/split.json`, each split as a list of parts, a part
being rows [start, stop) of one file of 00_raw/, or the whole file (`"rows": null`):
- Kaggle files: train = train.txt rows [0, b), valid = [b, N) with N - b = round(N *
  valid_fraction) (the last ~day of the 7 days in train.txt by default), test = all test rows.
  Nothing is shuffled across the boundary; the full train file stays available for a final refit.
- Criteo 1TB day files: train = every day but the last, valid = the last day, test = none (the
  logs have no Kaggle test set). Whole files: their rows were never counted.
"""

from __future__ import annotations

import dataclasses
import json

from preprocessing import schema
from pipeline import config as config_lib
from pipeline import errors
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Part:
    """Rows [start, stop) of one file of 00_raw/; stop None: to the end of the file."""
    file: str
    start: int = 0
    stop: int | None = None

    def to_json(self) -> dict:
        return {"file": self.file, "rows": None if self.stop is None else [self.start, self.stop]}


def split_ranges(train_rows: int, test_rows: int, valid_fraction: float) -> dict[str, list[Part]]:
    """The Kaggle split: train.txt rows [0, b) and [b, N), all test rows."""
    if not 0 < valid_fraction < 1:
        raise errors.InputError(f"split.valid_fraction={valid_fraction}: must be in (0, 1)")
    valid_rows = round(train_rows * valid_fraction)
    if valid_rows < 1 or valid_rows >= train_rows:
        raise errors.InputError(f"split.valid_fraction={valid_fraction} of {train_rows} train rows leaves "
                         f"{valid_rows} validation rows; need at least one in each split")
    boundary = train_rows - valid_rows
    return {"train": [Part("train.txt", 0, boundary)],
            "valid": [Part("train.txt", boundary, train_rows)],
            "test": [Part("test.txt", 0, test_rows)]}


def split_days(days: list[str]) -> dict[str, list[Part]]:
    """The 1TB split: every day file but the last for training, the last for validation."""
    return {"train": [Part(day) for day in days[:-1]], "valid": [Part(days[-1])], "test": []}


def split_rows(parts: list[Part]) -> int | None:
    """Rows of a split, or None when a part is a whole file of uncounted rows."""
    if any(part.stop is None for part in parts):
        return None
    return sum(part.stop - part.start for part in parts)


def describe(parts: list[Part]) -> str:
    """A split's rows ("1,234 rows"), or its files when their rows were not counted."""
    rows = split_rows(parts)
    if rows is not None:
        return f"{rows:,} rows"
    if len(parts) == 1:
        return parts[0].file
    return f"{parts[0].file} .. {parts[-1].file} ({len(parts)} files)"


def parse_split(data: dict, source: str = "split.json") -> dict[str, list[Part]]:
    """split.json's content -> {split: [Part, ...]}; ValueError naming `source` if malformed."""
    if not isinstance(data, dict) or set(data) != set(SPLITS) or \
            not all(isinstance(data[split], list) for split in SPLITS):
        raise errors.InputError(f"{source}: expected the splits {', '.join(SPLITS)}, each a list of "
                         f"parts (rebuild stage 01 if it was written by an older version)")
    return {split: [_part(item, f"{source}: {split} part") for item in data[split]]
            for split in SPLITS}


def _part(item, where: str) -> Part:
    if isinstance(item, dict) and isinstance(item.get("file"), str):
        rows = item.get("rows")
        if rows is None:
            return Part(item["file"])
        if isinstance(rows, list) and len(rows) == 2 and all(isinstance(r, int) for r in rows) \
                and 0 <= rows[0] <= rows[1]:
            return Part(item["file"], rows[0], rows[1])
    raise errors.InputError(f"{where} {item!r}: expected {{\"file\": NAME, \"rows\": [start, stop] or "
                     f"null}}")


def load_split(tag: str) -> dict[str, list[Part]]:
    """The parts of every split of a built stage 01."""
    path = stage_dir(tag, "01_split") / "split.json"
    return parse_split(json.loads(path.read_text()), str(path))


def file_plan(splits: dict[str, list[Part]]) -> list[tuple[str, dict[str, Part]]]:
    """The files to read in order, each with the part of every split it holds, so a file holding
    two splits (Kaggle train.txt) is read once. ValueError if a split names a file twice."""
    plan: dict[str, dict[str, Part]] = {}
    for split, parts in splits.items():
        for part in parts:
            if split in plan.setdefault(part.file, {}):
                raise errors.InputError(f"split.json: {split} names {part.file} twice")
            plan[part.file][split] = part
    return list(plan.items())


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    return Stage(tag, "01_split", config_lib.to_dict(config.split),
                 inputs=[stage_dir(tag, "00_raw")])


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    args, config, stage = started
    raw_info = json.loads((stage_dir(args.tag, "00_raw") / "raw.json").read_text())
    if raw_info["source"] == schema.CRITEO_1TB:
        splits = split_days(raw_info["days"])
    else:
        rows = raw_info["rows"]
        splits = split_ranges(rows["train"], rows["test"], config.split.valid_fraction)
    with stage.build() as out:
        (out / "split.json").write_text(json.dumps(
            {split: [part.to_json() for part in parts] for split, parts in splits.items()},
            indent=1) + "\n")
        stage.record(rows={split: split_rows(parts) for split, parts in splits.items()})
    print("  " + ", ".join(f"{split}: {describe(parts)}" for split, parts in splits.items()))


if __name__ == "__main__":
    main()
