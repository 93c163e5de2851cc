"""Every stage's status (done / stale / missing) and why: `./run.sh --list` prints it, and
`./run.sh` checks it before each stage (pipeline.run)."""

from __future__ import annotations

import importlib

from pipeline import registry, settings


def stages_of(entry: registry.StageEntry, tag: str, config: settings.PipelineConfig) -> list:
    """The Stage objects of one registry entry: its module's make_stage(tag, config) for one
    folder, or make_stages(tag, config) for one unit per model / blend."""
    module = importlib.import_module(entry.module)
    if hasattr(module, "make_stages"):
        return module.make_stages(tag, config)
    return [module.make_stage(tag, config)]


def stage_table(tag: str, config: settings.PipelineConfig,
                upto: registry.StageEntry | None = None) -> list[tuple]:
    """(registry entry, Stage, state, why) of every stage in run order (up to entry `upto`,
    included). A stage whose input is not done is stale even if its own fingerprint matches:
    the input will be rebuilt, and with it this stage."""
    table, states = [], {}
    entries = registry.STAGES[:registry.STAGES.index(upto) + 1] if upto else registry.STAGES
    for entry in entries:
        for stage in stages_of(entry, tag, config):
            state, why = stage.status()
            upstream = [label_of(path, tag) for path in stage.inputs
                        if states.get(label_of(path, tag), "done") != "done"]
            if upstream and state == "done":
                state, why = "stale", f"upstream {', '.join(upstream)} will be rebuilt"
            states[stage.label] = state
            table.append((entry, stage, state, why))
    return table


def rows(tag: str, config: settings.PipelineConfig) -> list[tuple[str, str, str]]:
    """(label, state, why) of every stage in run order: what `--list` prints."""
    return [(stage.label, state, why) for _, stage, state, why in stage_table(tag, config)]


def label_of(path, tag: str) -> str:
    """Stage label of an input folder: 03_hash, or 05_train/ipnn for a unit."""
    return path.name if path.parent.name == tag else f"{path.parent.name}/{path.name}"


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    print_rows(args.tag, rows(args.tag, settings.from_args(args)))


def print_rows(tag: str, table) -> None:
    print(f"artifact tree: {tag}")
    for label, state, why in table:
        print(f"  {label:<26} {state:<8} {why}")


if __name__ == "__main__":
    main()
