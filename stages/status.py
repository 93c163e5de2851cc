"""`./run.sh --list`: every stage's status (done / stale / missing) and why."""

from __future__ import annotations

import importlib

from stages import registry, settings


def stages_of(entry: registry.StageEntry, tag: str, config: settings.PipelineConfig) -> list:
    """The Stage objects of one registry entry: its module's make_stage(tag, config) for one
    folder, or make_stages(tag, config) for one unit per model / blend."""
    module = importlib.import_module(entry.module)
    if hasattr(module, "make_stages"):
        return module.make_stages(tag, config)
    return [module.make_stage(tag, config)]


def rows(tag: str, config: settings.PipelineConfig) -> list[tuple[str, str, str]]:
    table, states = [], {}
    for entry in registry.STAGES:
        for stage in stages_of(entry, tag, config):
            state, why = stage.status()
            upstream = [_name(path, tag) for path in stage.inputs
                        if states.get(_name(path, tag), "done") != "done"]
            if upstream and state == "done":
                state, why = "stale", f"upstream {', '.join(upstream)} will be rebuilt"
            states[stage.label] = state
            table.append((stage.label, state, why))
    return table


def _name(path, tag: str) -> str:
    """Stage label of an input folder: 03_hash, or 05_train/ipnn for a unit."""
    return path.name if path.parent.name == tag else f"{path.parent.name}/{path.name}"


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    print(f"artifact tree: {args.tag}")
    for label, state, why in rows(args.tag, config):
        print(f"  {label:<26} {state:<8} {why}")


if __name__ == "__main__":
    main()
