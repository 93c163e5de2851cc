"""`./run.sh --list`: every stage's status (done / stale / missing) and why."""

from __future__ import annotations

import importlib

from stages import settings
from stages.paths import REPO_ROOT

# Stage folder -> module with make_stage(tag, config). Stage 05 and later have one unit per model.
STAGE_MODULES = {"00_raw": "preprocessing.raw", "01_split": "preprocessing.split",
                 "02_count": "preprocessing.count", "03_hash": "preprocessing.hash_fields",
                 "04_export": "preprocessing.export"}
UNIT_STAGE_MODULES = {"05_train": "models.train"}


def rows(tag: str, config: settings.PipelineConfig) -> list[tuple[str, str, str]]:
    stages = [importlib.import_module(module).make_stage(tag, config)
              for module in STAGE_MODULES.values()]
    for module in UNIT_STAGE_MODULES.values():
        if (REPO_ROOT / (module.replace(".", "/") + ".py")).exists():
            make_stage = importlib.import_module(module).make_stage
            stages += [make_stage(tag, config, model_id) for model_id in config.models]
    table, states = [], {}
    for stage in stages:
        state, why = stage.status()
        upstream = [path.name for path in stage.inputs if states.get(path.name, "done") != "done"]
        if upstream and state == "done":
            state, why = "stale", f"upstream {', '.join(upstream)} will be rebuilt"
        states[stage.label] = state
        table.append((stage.label, state, why))
    return table


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    print(f"artifact tree: {args.tag}")
    for label, state, why in rows(args.tag, config):
        print(f"  {label:<22} {state:<8} {why}")


if __name__ == "__main__":
    main()
