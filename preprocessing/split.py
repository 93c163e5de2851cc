"""Stage 01: the time-ordered validation split.

Reads: `00_raw/raw.json` (row counts). Writes: `01_split/split.json`, the row ranges of each split:
train = raw train rows [0, b), valid = [b, N) with N - b = round(N * valid_fraction) (the last
~day of the 7 days in train.txt by default), test = all test rows. Nothing is shuffled across the
boundary; the full train file stays available for a final refit (train + valid).
"""

from __future__ import annotations

import json

from stages import config as config_lib
from stages import settings
from stages.manifest import Stage
from stages.paths import stage_dir

CODE = ["preprocessing/split.py"]


def split_ranges(train_rows: int, test_rows: int, valid_fraction: float) -> dict:
    """{"train": [0, b], "valid": [b, N], "test": [0, T]} as half-open row ranges per file."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"split.valid_fraction={valid_fraction}: must be in (0, 1)")
    valid_rows = round(train_rows * valid_fraction)
    if valid_rows < 1 or valid_rows >= train_rows:
        raise ValueError(f"split.valid_fraction={valid_fraction} of {train_rows} train rows leaves "
                         f"{valid_rows} validation rows; need at least one in each split")
    boundary = train_rows - valid_rows
    return {"train": {"file": "train.txt", "rows": [0, boundary]},
            "valid": {"file": "train.txt", "rows": [boundary, train_rows]},
            "test": {"file": "test.txt", "rows": [0, test_rows]}}


def load_split(tag: str) -> dict:
    return json.loads((stage_dir(tag, "01_split") / "split.json").read_text())


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    return Stage(tag, "01_split", config_lib.to_dict(config.split),
                 inputs=[stage_dir(tag, "00_raw")], code=CODE)


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    args, config, stage = started
    rows = json.loads((stage_dir(args.tag, "00_raw") / "raw.json").read_text())["rows"]
    ranges = split_ranges(rows["train"], rows["test"], config.split.valid_fraction)
    with stage.build() as out:
        (out / "split.json").write_text(json.dumps(ranges, indent=1) + "\n")
        stage.record(rows={split: r["rows"][1] - r["rows"][0] for split, r in ranges.items()})
        print("  " + ", ".join(f"{s}: {r['rows'][1] - r['rows'][0]:,} rows" for s, r in ranges.items()))


if __name__ == "__main__":
    main()
