"""What an artifact tree remembers: the data folder and config overlays it was built with.

`./run.sh --data DIR --tag T --set k=v` records DIR (as `raw.data_dir`), the `--config` files and
the `--set` overrides in `artifacts/T/tag.json`; later commands on T (`--list`, `--only`,
`--from`, a stage run directly) apply them first, then their own, so they need no repeated
flags and judge the stages against the same config. A `--set` of a remembered key replaces it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.atomic import replacing
from pipeline.paths import artifacts_root

TAG_FILE = "tag.json"
DATA_KEY = "raw.data_dir"


def tag_file(tag: str) -> Path:
    return artifacts_root() / tag / TAG_FILE


def remembered(tag: str) -> tuple[list[str], list[str]]:
    """(config files, overrides) recorded for `tag`; empty when it has none."""
    path = tag_file(tag)
    if not path.is_file():
        return [], []
    try:
        data = json.loads(path.read_text())
        return list(data.get("config", [])), list(data.get("set", []))
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: unreadable ({error}); delete it and pass --data/--set "
                         "again") from error


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def combine(config_files, overrides, more_files=(), more_overrides=()) -> tuple[list, list]:
    """Remembered overlays followed by new ones; a new `--set` of a remembered key replaces it,
    a config file given again is not repeated."""
    files = list(config_files) + [str(path) for path in more_files
                                  if str(path) not in config_files]
    replaced = {_key(item) for item in more_overrides}
    return files, [item for item in overrides if _key(item) not in replaced] + list(more_overrides)


def resolve(tag: str, config_files=(), overrides=()) -> tuple[list[str], list[str]]:
    """The overlays a command on `tag` runs with: the remembered ones, then its own."""
    old_files, old_overrides = remembered(tag)
    return combine(old_files, old_overrides, config_files, overrides)


def data_dir(overrides) -> str | None:
    values = [item.split("=", 1)[1] for item in overrides if _key(item) == DATA_KEY]
    return values[-1] if values else None


def check_same_data(tag: str, overrides) -> None:
    """Refuses a `--data` other than the one `tag` was built from (two datasets in one tree)."""
    old, new = data_dir(remembered(tag)[1]), data_dir(overrides)
    if old and new and os.path.realpath(old) != os.path.realpath(new):
        raise ValueError(f"tag {tag!r} was built from {old}, not {new}: use another --tag for "
                         f"other data, or --force to rebuild {tag!r} from {new}")


def save(tag: str, config_files, overrides) -> None:
    """Records the overlays of a run on `tag` (atomically)."""
    path = tag_file(tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = [str(Path(item).resolve()) if Path(item).exists() else str(item)
             for item in config_files]
    with replacing(path) as temporary:
        temporary.write_text(json.dumps({"config": files, "set": list(overrides)}, indent=1)
                             + "\n")
