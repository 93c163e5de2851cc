"""The ordered stage registry: the one place that says which stages exist, in what order, and
which entry module each one runs. `./run.sh` (through `pipeline.run`), `--only`, `--from` and
`--list` all read it; each `stages/<folder>.sh` is the thin, documented script of one entry
(tests check the two against each other).
"""

from __future__ import annotations

import dataclasses

from pipeline.paths import REPO_ROOT


@dataclasses.dataclass(frozen=True)
class StageEntry:
    number: str  # "04": --only and --from select by number (both 04 stages share one)
    folder: str  # "04_export": artifacts/<tag>/<folder>/ and stages/<folder>.sh
    module: str  # the `python -m` entry point; its import closure is the stage's code

    @property
    def script(self):
        return REPO_ROOT / "stages" / f"{self.folder}.sh"


STAGES = (
    StageEntry("00", "00_raw", "preprocessing.raw"),
    StageEntry("01", "01_split", "preprocessing.split"),
    StageEntry("02", "02_count", "preprocessing.count"),
    StageEntry("03", "03_hash", "preprocessing.hash_fields"),
    StageEntry("04", "04_export", "preprocessing.export"),
    StageEntry("04", "04_leaves", "preprocessing.leaves"),
    StageEntry("05", "05_train", "models.stage"),
    StageEntry("06", "06_calibrate", "ensembles.calibrate"),
    StageEntry("07", "07_ensemble", "ensembles.blend"),
    StageEntry("08", "08_submit", "submissions.write"),
    StageEntry("09", "09_upload", "submissions.upload"),
)

BY_FOLDER = {entry.folder: entry for entry in STAGES}


def entry_module(folder: str) -> str | None:
    """The entry module of stage folder `folder` ("03_hash"), None for a folder not registered
    (tests' own stages)."""
    entry = BY_FOLDER.get(folder)
    return entry.module if entry else None


def select(only: str = "", start: str = "") -> list[StageEntry]:
    """The entries chosen by --only "02,03" or --from "04" (all of them when both are empty);
    an unknown number is an error listing the known ones."""
    numbers = sorted({entry.number for entry in STAGES})
    wanted = [item.strip().zfill(2) for item in only.split(",") if item.strip()]
    if start:
        wanted.append(start.strip().zfill(2))
    unknown = [item for item in wanted if item not in numbers]
    if unknown:
        raise ValueError(f"unknown stage number(s) {', '.join(unknown)}; "
                         f"stages are {', '.join(numbers)}")
    if only:
        return [entry for entry in STAGES if entry.number in wanted]
    if start:
        return [entry for entry in STAGES if entry.number >= start.strip().zfill(2)]
    return list(STAGES)
