"""Adam epsilon sensitivity (Qu et al. 2018, Table 11): AUC and logloss per model and epsilon.

`python -m experiments.adam_epsilon --out DIR [--tag TAG | --data DIR] [--set 'models=[fm, ipnn]']`

Every (model, epsilon) pair is one run of the runner with `train.adam_epsilon` set. A run "did
not converge" when training fails on non-finite values, or when its best validation logloss is
not finite or does not beat the constant prediction (the training click rate) by at least
`min_information_gain` (relative information gain, 1 - logloss / constant logloss).

Writes adam_epsilon.md (the table), adam_epsilon.csv, adam_epsilon.png (AUC against epsilon, one
line per model, crosses where a run did not converge), config.resolved.json.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from experiments import common


@dataclasses.dataclass(frozen=True)
class AdamEpsilonConfig(common.RunOverlays):
    models: tuple[str, ...] = ("fm", "ipnn")
    epsilons: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8)
    min_information_gain: float = 0.001
    preset: str = "auto"


def convergence(metrics: dict | None, min_gain: float, error: str | None = None) -> str | None:
    """None when the run converged, else why not."""
    if error is not None:
        return f"training failed: {error}"
    loss = metrics["valid_logloss"]
    if not math.isfinite(loss) or not math.isfinite(metrics["valid_auc"]):
        return "non-finite validation metrics"
    gain = metrics["relative_information_gain"]
    if gain < min_gain:
        return f"no better than the constant prediction (RIG {gain:.4f} < {min_gain})"
    return None


def run(config: AdamEpsilonConfig, source: Path, out: Path, force: bool = False) -> list[dict]:
    table, run_configs = [], {}
    with common.Workspace(out) as workspace:
        tag = workspace.link_data(source)
        for model_id in config.models:
            for epsilon in config.epsilons:
                unit = f"{model_id}__eps{epsilon:.0e}"
                overrides = [*common.model_overrides(config, model_id),
                             f"train.adam_epsilon={epsilon!r}"]
                runner_config = workspace.runner_config(tag, model_id, overrides, config.preset)
                metrics, error = None, None
                try:
                    trained = workspace.train(tag, unit, model_id, force=force,
                                              config=runner_config)
                    metrics, run_configs[unit] = trained.metrics, trained.config
                except (ValueError, FloatingPointError, ArithmeticError) as failure:
                    # sklearn refuses NaN predictions; a diverged run surfaces here
                    error = f"{type(failure).__name__}: {str(failure).splitlines()[0][:120]}"
                reason = convergence(metrics, config.min_information_gain, error)
                table.append({"model": model_id, "epsilon": epsilon,
                              "valid_auc": metrics["valid_auc"] if metrics else None,
                              "valid_logloss": metrics["valid_logloss"] if metrics else None,
                              "relative_information_gain":
                                  metrics["relative_information_gain"] if metrics else None,
                              "converged": reason is None, "note": reason or ""})
                print(f"[adam_epsilon] {unit}: " + (reason or "converged"), flush=True)
    common.write_csv(out / "adam_epsilon.csv", table)
    plot(table, out / "adam_epsilon.png")
    (out / "adam_epsilon.md").write_text(summary(table, config, source))
    common.save_resolved(out, experiment="adam_epsilon", config=config, data=str(source),
                         runs=run_configs)
    return table


def summary(table: list[dict], config: AdamEpsilonConfig, source: Path) -> str:
    columns = [f"eps={epsilon:g}" for epsilon in config.epsilons]
    rows = []
    for model_id in config.models:
        row = {"model": model_id}
        for entry in (entry for entry in table if entry["model"] == model_id):
            row[f"eps={entry['epsilon']:g}"] = (
                f"{entry['valid_auc']:.4f} / {entry['valid_logloss']:.4f}"
                if entry["converged"] else "did not converge")
        rows.append(row)
    notes = [f"- {entry['model']}, eps={entry['epsilon']:g}: {entry['note']}"
             for entry in table if not entry["converged"]]
    return "\n".join(["# Adam epsilon sensitivity (validation AUC / logloss)", "",
                      common.data_description(source), "",
                      common.markdown_table(rows, ["model"] + columns), "",
                      *(["Did not converge:", "", *notes, ""] if notes else []),
                      "![auc](adam_epsilon.png)", ""])


def plot(table: list[dict], path: Path) -> None:
    plt = common.pyplot()
    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for model_id in dict.fromkeys(entry["model"] for entry in table):
        entries = [entry for entry in table if entry["model"] == model_id]
        good = [(entry["epsilon"], entry["valid_auc"]) for entry in entries if entry["converged"]]
        line = axis.plot(*zip(*good), marker="o", label=model_id)[0] if good else None
        bad = [entry["epsilon"] for entry in entries if not entry["converged"]]
        if bad:
            axis.scatter(bad, [0.5] * len(bad), marker="x", s=60,
                         color=line.get_color() if line else None,
                         label=f"{model_id}: did not converge")
    axis.set_xscale("log")
    axis.set_xlabel("Adam epsilon")
    axis.set_ylabel("validation AUC")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    common.save_figure(figure, path)


def main(argv=None) -> list[dict]:
    return common.table_main(__doc__, AdamEpsilonConfig, "adam_epsilon", run, argv)


if __name__ == "__main__":
    main()
