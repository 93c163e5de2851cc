"""Learning curves: train and validation logloss against rows seen, every model in one figure.

`python -m experiments.learning_curves --out DIR [--tag TAG | --data DIR] [--set 'models=[fm, ipnn]']`

Each model is trained by the runner with `train.eval_every_rows` = training rows /
`evaluations_per_epoch`, and its history.csv (one row per evaluation: rows seen, mean training
logloss since the previous evaluation, validation logloss and AUC) is drawn: validation solid,
training dashed, one colour per model. With `--set from_pipeline=true` nothing is trained: the
curves are read from the pipeline's own runs, `<artifacts>/<TAG>/05_train/<id>/history.csv`.

Writes learning_curves.png, learning_curves.csv (every history row with its model),
learning_curves.md, config.resolved.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments import common
from preprocessing.field_spec import FieldSpec
from pipeline.paths import stage_dir


@dataclasses.dataclass(frozen=True)
class LearningCurvesConfig(common.RunOverlays):
    models: tuple[str, ...] = ("lr", "fm", "ffm", "kfm_vec", "ipnn", "kpnn_vec", "pin")
    evaluations_per_epoch: int = 8
    from_pipeline: bool = False  # read <artifacts>/<tag>/05_train/<id>/history.csv, train nothing
    preset: str = "auto"


def pipeline_histories(tag: str, models, root: Path | None = None) -> dict[str, list[dict]]:
    """The pipeline's runs' histories, `<root>/<tag>/05_train/<id>/history.csv` (root None: the
    process's artifacts root)."""
    histories = {}
    for model_id in models:
        path = stage_dir(tag, "05_train", model_id, root=root) / "history.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; train it with ./run.sh --only 05 "
                                    f"--model {model_id} --tag {tag}")
        histories[model_id] = common.read_history(path)
    return histories


def trained_histories(config: LearningCurvesConfig, source: Path, out: Path,
                      force: bool) -> tuple[dict, dict]:
    rows = FieldSpec.load(source).rows["train"]
    histories, run_configs = {}, {}
    with common.Workspace(out) as workspace:
        tag = workspace.link_data(source)
        for model_id in config.models:
            runner = workspace.runner_config(tag, model_id,
                                             common.model_overrides(config, model_id),
                                             config.preset)
            used_rows = min(rows, runner.train.max_train_rows or rows)
            every = max(used_rows // config.evaluations_per_epoch, 1)
            trained = workspace.train(tag, model_id, model_id, [
                *common.model_overrides(config, model_id),
                f"train.eval_every_rows={every}"], config.preset, force)
            histories[model_id], run_configs[model_id] = trained.history, trained.config
    return histories, run_configs


def plot(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    plt = common.pyplot()
    figure, axis = plt.subplots(figsize=(8, 5), dpi=110)
    for index, (model_id, history) in enumerate(histories.items()):
        color = f"C{index % 10}"
        axis.plot([row["examples"] for row in history], [row["valid_logloss"] for row in history],
                  color=color, marker=".", label=f"{model_id} valid")
        train = [(row["examples"], row["train_logloss"]) for row in history
                 if row["train_logloss"] is not None]
        if train:
            axis.plot(*zip(*train), color=color, linestyle="--", alpha=0.7,
                      label=f"{model_id} train")
    axis.set_xlabel("training rows seen")
    axis.xaxis.set_major_formatter(common.engineering_format())
    axis.set_ylabel("logloss")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, ncol=2)
    common.save_figure(figure, path)


def run(config: LearningCurvesConfig, args) -> dict[str, list[dict]]:
    out = args.out
    if config.from_pipeline:
        if args.data is not None:
            raise ValueError("learning_curves: from_pipeline reads artifacts/<TAG>/05_train; "
                             "use --tag, not --data")
        histories, run_configs = pipeline_histories(args.tag, config.models, args.artifacts), {}
        where = f"the pipeline's runs of {stage_dir(args.tag, '05_train', root=args.artifacts)}"
    else:
        source = common.source_folder(args)
        histories, run_configs = trained_histories(config, source, out, args.force)
        where = common.data_description(source)
    plot(histories, out / "learning_curves.png", "train (dashed) and validation (solid) logloss")
    rows = [{"model": model_id, **row} for model_id, history in histories.items()
            for row in history]
    common.write_csv(out / "learning_curves.csv", rows)
    best = [{"model": model_id, "evaluations": len(history),
             "rows_seen": history[-1]["examples"],
             "best_valid_logloss": min(row["valid_logloss"] for row in history),
             "best_valid_auc": max(row["valid_auc"] for row in history)}
            for model_id, history in histories.items()]
    (out / "learning_curves.md").write_text("\n".join([
        "# Learning curves", "", where, "",
        common.markdown_table(best, ["model", "evaluations", "rows_seen", "best_valid_logloss",
                                     "best_valid_auc"]), "",
        "![learning curves](learning_curves.png)", ""]))
    common.save_resolved(out, experiment="learning_curves", config=config, runs=run_configs)
    return histories


def main(argv=None) -> dict[str, list[dict]]:
    args = common.experiment_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = common.load_experiment_config(LearningCurvesConfig, "learning_curves", args.config,
                                           args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    histories = run(config, args)
    print((args.out / "learning_curves.md").read_text())
    return histories


if __name__ == "__main__":
    main()
