"""Adaptive embedding sizes (Qu et al. 2018, Table 7): fixed K against k_i = min(c ln N_i, K).

`python -m experiments.adaptive_embedding --out DIR [--tag TAG | --data DIR] [--set 'scales=[1, 2]']`

Each model is trained once with every field at K = `model.embedding_dim` of its config, and once
per c in `scales` with `model.adaptive_embedding = {c, max_dim: K}` (field i gets
k_i = min(max(1, round(c ln N_i)), K), N_i its vocabulary size; models/layers/adaptive_embedding.py).
A model whose arch has no `adaptive_embedding` keyword is reported as unsupported, not trained.

Writes adaptive_embedding.md, adaptive_embedding.csv, adaptive_embedding.png (AUC per setting;
k_i per field), config.resolved.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from experiments import common
from preprocessing.field_spec import FieldSpec


@dataclasses.dataclass(frozen=True)
class AdaptiveConfig(common.RunOverlays):
    models: tuple[str, ...] = ("kfm_vec", "nifm")
    scales: tuple[float, ...] = (1.0, 2.0)  # c
    preset: str = "auto"


def run(config: AdaptiveConfig, source: Path, out: Path, force: bool = False) -> list[dict]:
    from models import registry
    from models.layers.adaptive_embedding import adaptive_dims

    spec = FieldSpec.load(source)
    sizes = np.array(spec.vocabulary_sizes)
    table, dims, unsupported, run_configs = [], {}, [], {}
    with common.Workspace(out) as workspace:
        tag = workspace.link_data(source)
        for model_id in config.models:
            base = common.model_overrides(config, model_id)
            runner = workspace.runner_config(tag, model_id, base, config.preset)
            if "adaptive_embedding" not in registry.hyperparameters(runner.arch):
                unsupported.append(f"{model_id} (arch {runner.arch})")
                print(f"[adaptive_embedding] {model_id}: arch {runner.arch!r} has no "
                      "adaptive_embedding keyword, skipped", flush=True)
                continue
            top = int(runner.model["embedding_dim"])
            settings = [("fixed", None, [top] * spec.num_fields)]
            settings += [(f"c={scale:g}", {"c": scale, "max_dim": top},
                          adaptive_dims(spec.vocabulary_sizes, top, {"c": scale, "max_dim": top}))
                         for scale in config.scales]
            for name, adaptive, field_dims in settings:
                unit = f"{model_id}__{name.replace('=', '')}"
                value = "null" if adaptive is None else \
                    f"{{c: {adaptive['c']!r}, max_dim: {adaptive['max_dim']}}}"
                trained = workspace.train(tag, unit, model_id,
                                          [*base, f"model.adaptive_embedding={value}"],
                                          config.preset, force)
                run_configs[unit] = trained.config
                dims[(model_id, name)] = field_dims
                table.append({"model": model_id, "setting": name, "K": top,
                              "mean_k": float(np.mean(field_dims)),
                              "embedding_values_used": int(np.dot(sizes, field_dims)),
                              "valid_auc": trained.metrics["valid_auc"],
                              "valid_logloss": trained.metrics["valid_logloss"]})
    if table:
        plot(table, dims, spec.field_names, out / "adaptive_embedding.png")
    common.write_csv(out / "adaptive_embedding.csv", table,
                     ["model", "setting", "K", "mean_k", "embedding_values_used", "valid_auc",
                      "valid_logloss"])
    (out / "adaptive_embedding.md").write_text(summary(table, unsupported, source))
    common.save_resolved(out, experiment="adaptive_embedding", config=config, data=str(source),
                         runs=run_configs, unsupported=unsupported)
    return table


def summary(table: list[dict], unsupported: list[str], source: Path) -> str:
    lines = ["# Adaptive embedding sizes", "", common.data_description(source), "",
             ("`embedding_values_used` = sum_i N_i k_i (the table keeps K columns per id; the "
              "columns past k_i are masked to zero)."), "",
             common.markdown_table(table, ["model", "setting", "K", "mean_k",
                                           "embedding_values_used", "valid_auc",
                                           "valid_logloss"]), ""]
    if unsupported:
        lines += ["Not run (the model has no `adaptive_embedding` keyword): "
                  + ", ".join(unsupported), ""]
    if table:
        lines += ["![auc](adaptive_embedding.png)", ""]
    return "\n".join(lines)


def plot(table: list[dict], dims: dict, names: list[str], path: Path) -> None:
    plt = common.pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110,
                                         gridspec_kw={"width_ratios": [1, 1.6]})
    labels = [f"{row['model']}\n{row['setting']}" for row in table]
    left.bar(range(len(table)), [row["valid_auc"] for row in table], color="tab:blue")
    left.set_xticks(range(len(table)), labels, fontsize=7)
    aucs = [row["valid_auc"] for row in table]
    margin = max(max(aucs) - min(aucs), 0.002)
    left.set_ylim(min(aucs) - margin, max(aucs) + margin)
    left.set_ylabel("validation AUC")
    left.grid(alpha=0.3, axis="y")
    first_model = table[0]["model"]
    for (model_id, name), field_dims in dims.items():
        if model_id == first_model:
            right.plot(range(len(names)), field_dims, marker=".", label=name)
    right.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    right.set_ylabel("k_i")
    right.set_title(f"embedding size per field ({first_model})", fontsize=9)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    common.save_figure(figure, path)


def main(argv=None) -> list[dict]:
    return common.table_main(__doc__, AdaptiveConfig, "adaptive_embedding", run, argv)


if __name__ == "__main__":
    main()
