"""Parameters and speed (Qu et al. 2018, Table 10): parameter count and training time per model.

`python -m experiments.params_speed --out DIR [--tag TAG | --data DIR] [--set rows=100000]`

Every model trains one pass over the first `rows` training rows on the machine at hand (the
runner's sparse-update step, `--set preset=paper` for the paper's network sizes), evaluating
every `rows / evaluations` rows on `valid_rows` validation rows. Reported per model: parameter
count (whole tables, as Keras counts them), training seconds for the rows (step time only,
the first step's compilation included), and the steady rate: examples/s between the first
and the last evaluation, which leaves compilation and warm-up out.

Writes params_speed.md, params_speed.csv, params_speed.png, config.resolved.json.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

from experiments import common

PAPER_MODELS = ("lr", "fm", "ffm", "kfm_vec", "nifm", "fnn", "ccpm", "afm", "deepfm", "ipnn",
                "kpnn_vec", "pin")


@dataclasses.dataclass(frozen=True)
class ParamsSpeedConfig(common.RunOverlays):
    models: tuple[str, ...] = PAPER_MODELS
    rows: int = 50_000
    valid_rows: int = 5_000
    evaluations: int = 4
    preset: str = "auto"


def steady_rate(history: list[dict]) -> float | None:
    """Examples/s between the first and the last evaluation (None with fewer than two)."""
    if len(history) < 2:
        return None
    first, last = history[0], history[-1]
    seconds = last["train_seconds"] - first["train_seconds"]
    return (last["examples"] - first["examples"]) / seconds if seconds > 0 else None


def run(config: ParamsSpeedConfig, source: Path, out: Path, force: bool = False) -> list[dict]:
    import keras

    every = max(config.rows // config.evaluations, 1)
    fixed = [f"train.max_train_rows={config.rows}", f"train.max_valid_rows={config.valid_rows}",
             "train.epochs=1", "train.early_stopping_patience=0",
             f"train.eval_every_rows={every}", "train.checkpoint_every_steps=0"]
    table, run_configs = [], {}
    with common.Workspace(out) as workspace:
        tag = workspace.link_data(source)
        for model_id in config.models:
            trained = workspace.train(tag, model_id, model_id,
                                      [*common.model_overrides(config, model_id), *fixed],
                                      config.preset, force)
            run_configs[model_id] = trained.config
            metrics = trained.metrics
            table.append({"model": model_id, "arch": trained.arch,
                          "parameters": metrics["parameter_count"],
                          "train_rows": round(metrics["epochs"] * metrics["train_rows"]),
                          "train_seconds": metrics["train_seconds"],
                          "examples_per_second": metrics["examples_per_second"],
                          "steady_examples_per_second": steady_rate(trained.history),
                          "valid_auc": metrics["valid_auc"]})
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible, "
               f"Keras backend {keras.backend.backend()}")
    common.write_csv(out / "params_speed.csv", table)
    plot(table, out / "params_speed.png", machine)
    (out / "params_speed.md").write_text(summary(table, source, machine))
    common.save_resolved(out, experiment="params_speed", config=config, data=str(source),
                         machine=machine, runs=run_configs)
    return table


def summary(table: list[dict], source: Path, machine: str) -> str:
    return "\n".join([
        "# Parameters and training speed", "", common.data_description(source), "",
        (f"Machine: {machine}. `steady` = examples/s between the first and last evaluation "
         "(no compilation); AUC after this short run is not a model comparison."), "",
        common.markdown_table(table, ["model", "parameters", "train_rows", "train_seconds",
                                      "examples_per_second", "steady_examples_per_second",
                                      "valid_auc"], digits=3), "",
        "![params and speed](params_speed.png)", ""])


def plot(table: list[dict], path: Path, machine: str) -> None:
    plt = common.pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    names = [row["model"] for row in table]
    left.bar(names, [row["parameters"] for row in table], color="tab:purple")
    left.set_yscale("log")
    left.set_ylabel("parameters")
    rates = [row["steady_examples_per_second"] or row["examples_per_second"] for row in table]
    right.bar(names, rates, color="tab:green")
    right.set_ylabel("training examples / s (steady)")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=60, labelsize=7)
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(machine, fontsize=8)
    common.save_figure(figure, path)


def main(argv=None) -> list[dict]:
    return common.table_main(__doc__, ParamsSpeedConfig, "params_speed", run, argv)


if __name__ == "__main__":
    main()
