"""Synthetic poly-2 experiment (Qu et al. 2018, §5.4, Fig. 20): can a DNN learn pairwise terms?

`python -m experiments.poly2 --out DIR [--set data.feature_counts=[200,1000]] [--set ...]`

Data (one set per N in `data.feature_counts`): n = `data.num_fields` categorical fields whose
sizes are random with mean N/n (1 + a uniform multinomial share of N - n, so they sum to N); each
row takes one value per field, uniformly. The label is a thresholded poly-2 function with noise:

    f(x) = sum_i w[x_i] + sum_{i<j} W_ij[x_i, x_j],  y = 1[f(x) + noise_sd * sd(f) * e > median]

with w ~ N(0, first_order_sd^2), W_ij ~ N(0, 1 / P) per feature pair (P = n(n-1)/2 field
pairs, so the pair sum has unit variance) and e ~ N(0, 1). The poly-2 model is the upper bound:
the validation AUC of f itself (the Bayes-optimal ranking; a poly-2 model with enough data
learns f exactly). Each set is a stage-03 folder `runs/poly2_N<N>/03_hash/`.

Models (`models:` in configs/experiments/poly2.yaml): DNNs 1x128, 1x512 and 3x128 (the FNN
arch, an MLP on the embeddings) and IPNN, KPNN, PIN, trained by the runner with
`eval_every_rows` set so that each run has a validation AUC curve.

Writes poly2_dnn_curves.png (a: DNN validation AUC against rows seen, one panel per N),
poly2_auc.png (b: final AUC against N per model, with the poly-2 bound), poly2.csv, summary.md,
config.resolved.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from experiments import common
from pipeline import config as config_lib
from pipeline.manifest import Stage
from preprocessing.synthetic.field_files import write_field_files

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Poly2Data:
    num_fields: int = 40
    feature_counts: tuple[int, ...] = (200, 400, 600, 800, 1000)
    train_rows: int = 200_000
    valid_rows: int = 20_000
    test_rows: int = 1_000  # the runner predicts a test split; unused here
    first_order_sd: float = 0.5
    noise_sd: float = 0.5  # label noise relative to the sd of f
    seed: int = 2014


@dataclasses.dataclass(frozen=True)
class Poly2Config:
    data: Poly2Data = Poly2Data()
    # run name -> {config: configs/models id, model: {...}, train: {...}} (the run's overlays,
    # over `model:` and `train:`)
    models: dict = dataclasses.field(default_factory=dict)
    runs: tuple[str, ...] = ()  # the names of `models` to train (a list replaces, a dict merges)
    dnn_runs: tuple[str, ...] = ("dnn_1x128", "dnn_1x512", "dnn_3x128")  # plotted in (a)
    evaluations_per_epoch: int = 4
    preset: str = "demo"
    model: dict = dataclasses.field(default_factory=dict)  # over every run's model: section
    train: dict = dataclasses.field(default_factory=dict)  # over every run's train: section


def field_sizes(rng: np.random.Generator, num_fields: int, feature_count: int) -> np.ndarray:
    """Random sizes >= 1 with mean feature_count / num_fields, summing to feature_count."""
    if feature_count < num_fields:
        raise ValueError(f"poly2: N = {feature_count} features cannot fill {num_fields} fields")
    return 1 + rng.multinomial(feature_count - num_fields, np.full(num_fields, 1 / num_fields))


def generate(data: Poly2Data, feature_count: int, chunk_rows: int = 8192):
    """(sizes [n], {split: (values int64 [rows, n], f float64 [rows], labels uint8)})."""
    rng = np.random.default_rng([data.seed, feature_count])
    n = data.num_fields
    sizes = field_sizes(rng, n, feature_count)
    rows, cols = np.triu_indices(n, k=1)
    first_order = [rng.normal(0.0, data.first_order_sd, size) for size in sizes]
    pair_start = np.concatenate([[0], np.cumsum(sizes[rows] * sizes[cols])[:-1]])
    pair_weights = rng.normal(0.0, 1.0 / np.sqrt(len(rows)), int(np.sum(sizes[rows] * sizes[cols])))
    splits = {}
    for split, count in zip(SPLITS, (data.train_rows, data.valid_rows, data.test_rows)):
        values = np.stack([rng.integers(0, size, count) for size in sizes], axis=1)
        f = np.empty(count)
        for start in range(0, count, chunk_rows):
            block = values[start:start + chunk_rows]
            index = pair_start + block[:, rows] * sizes[cols] + block[:, cols]  # [b, P]
            f[start:start + chunk_rows] = pair_weights[index].sum(axis=1) + sum(
                first_order[i][block[:, i]] for i in range(n))
        splits[split] = (values, f, rng.standard_normal(count))
    scale = np.std(splits["train"][1])
    noisy = {split: f + data.noise_sd * scale * noise for split, (_, f, noise) in splits.items()}
    threshold = np.median(noisy["train"])
    return sizes, {split: (values, f, (noisy[split] > threshold).astype(np.uint8))
                   for split, (values, f, _) in splits.items()}


def build_data_stage(data: Poly2Data, feature_count: int, force: bool) -> tuple[str, float]:
    """Publishes one poly-2 set as `poly2_N<N>/03_hash` of the workspace; returns (tag, bound AUC).

    The bound (validation AUC of f) is recorded in the manifest, so a rebuilt set is never needed
    to read it back.
    """
    tag = f"poly2_N{feature_count}"
    config = {"data": config_lib.to_dict(data), "feature_count": feature_count}
    stage = Stage(tag, "03_hash", config, inputs=[], code=__spec__.name)
    if stage.should_run(force):
        sizes, splits = generate(data, feature_count)
        offsets = np.concatenate([[0], np.cumsum(sizes + 2)[:-1]])
        arrays = {split: (values + 2 + offsets, labels if split != "test" else None)
                  for split, (values, _, labels) in splits.items()}
        bound = float(roc_auc_score(splits["valid"][2], splits["valid"][1]))
        names = [f"F{index + 1}" for index in range(data.num_fields)]
        with stage.build() as out:
            write_field_files(out, arrays, names, (sizes + 2).tolist(),
                              {"source": "synthetic", "generator": "poly2",
                               "feature_count": feature_count})
            stage.record(poly2_bound_auc=bound)
    manifest = json.loads((stage.directory / "manifest.json").read_text())
    return tag, manifest["poly2_bound_auc"]


def run(config: Poly2Config, out: Path, force: bool = False) -> list[dict]:
    unknown = sorted(set(config.runs) - set(config.models))
    if not config.runs or unknown:
        raise ValueError(f"poly2: `runs` must name entries of `models` ({sorted(config.models)}), "
                         f"got {list(config.runs)}")
    table, curves, run_configs = [], {}, {}
    with common.Workspace(out) as workspace:
        for feature_count in config.data.feature_counts:
            tag, bound = build_data_stage(config.data, feature_count, force)
            every = max(config.data.train_rows // config.evaluations_per_epoch, 1)
            table.append({"N": feature_count, "model": "poly-2 (bound)", "valid_auc": bound})
            for name in config.runs:
                entry = config.models[name]
                unknown = sorted(set(entry) - {"config", *common.RUN_SECTIONS})
                if unknown or "config" not in entry:
                    raise ValueError(f"poly2: models.{name} needs `config` (and optional `model`, "
                                     f"`train`), got keys {sorted(entry)}")
                overrides = [f"train.eval_every_rows={every}", *common.run_overrides(
                    {"model": config.model, "train": config.train},
                    {section: entry[section] for section in common.RUN_SECTIONS
                     if section in entry})]
                trained = workspace.train(tag, name, entry["config"], overrides, config.preset,
                                          force)
                run_configs[f"{tag}/{name}"] = trained.config
                curves[(feature_count, name)] = trained.history
                table.append({"N": feature_count, "model": name,
                              "valid_auc": trained.metrics["valid_auc"],
                              "valid_logloss": trained.metrics["valid_logloss"],
                              "parameters": trained.metrics["parameter_count"]})
    plot_dnn_curves(curves, config, out / "poly2_dnn_curves.png")
    plot_final_auc(table, out / "poly2_auc.png")
    common.write_csv(out / "poly2.csv", table, ["N", "model", "valid_auc", "valid_logloss",
                                                "parameters"])
    (out / "summary.md").write_text(summary(table))
    common.save_resolved(out, experiment="poly2", config=config, runs=run_configs)
    return table


def plot_dnn_curves(curves: dict, config: Poly2Config, path: Path) -> None:
    plt = common.pyplot()
    counts = config.data.feature_counts
    figure, axes = plt.subplots(1, len(counts), figsize=(3.2 * len(counts), 3.2), dpi=110,
                                squeeze=False, sharey=True)
    for axis, feature_count in zip(axes[0], counts):
        for name in config.dnn_runs:
            history = curves.get((feature_count, name))
            if history:
                axis.plot([row["examples"] for row in history],
                          [row["valid_auc"] for row in history], marker=".", label=name)
        axis.set_title(f"N = {feature_count}", fontsize=9)
        axis.set_xlabel("rows seen")
        axis.xaxis.set_major_formatter(common.engineering_format())
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation AUC")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("(a) DNN validation AUC during training", fontsize=10)
    common.save_figure(figure, path)


def plot_final_auc(table: list[dict], path: Path) -> None:
    plt = common.pyplot()
    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for name in dict.fromkeys(row["model"] for row in table):
        points = [(row["N"], row["valid_auc"]) for row in table if row["model"] == name]
        style = {"color": "black", "linestyle": "--"} if name.startswith("poly-2") else {}
        axis.plot(*zip(*points), marker="o", label=name, **style)
    axis.set_xlabel("N (features over all fields)")
    axis.set_ylabel("validation AUC (best)")
    axis.set_title("(b) poly-2 data: models against the poly-2 bound", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    common.save_figure(figure, path)


def summary(table: list[dict]) -> str:
    counts = list(dict.fromkeys(row["N"] for row in table))
    names = list(dict.fromkeys(row["model"] for row in table))
    auc = {(row["N"], row["model"]): row["valid_auc"] for row in table}
    rows = [{"model": name, **{f"N={count}": auc.get((count, name)) for count in counts}}
            for name in names]
    return "\n".join(["# Synthetic poly-2 experiment (validation AUC)", "",
                      common.markdown_table(rows, ["model"] + [f"N={c}" for c in counts]), "",
                      "![curves](poly2_dnn_curves.png)", "", "![auc](poly2_auc.png)", ""])


def main(argv=None) -> list[dict]:
    parser = common.experiment_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    if args.data is not None:
        parser.error("poly2 generates its own data; --data does not apply")
    config = common.load_experiment_config(Poly2Config, "poly2", args.config, args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    table = run(config, args.out, args.force)
    print((args.out / "summary.md").read_text())
    return table


if __name__ == "__main__":
    main()
