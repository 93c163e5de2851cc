"""Feature-interaction heatmaps (Qu et al. 2018, §5.3, Fig. 19): field x field strength per model.

`python -m experiments.heatmaps --out DIR [--tag TAG | --data DIR | --planted] [--set ...]`

Each model is trained through the runner, then every field pair gets two numbers, computed on
validation rows from the model's own pair term t_ij (a scalar, or a vector for PIN's sub-nets):

* `row_std`: the spread of t_ij over the rows, sqrt(sum_u var_rows(t_ij,u)): how much the pair
  moves the model's input. A constant term (a bias in disguise) scores 0.
* `mean_embedding` (the paper's picture): |t_ij| evaluated at the per-field mean embeddings
  (frequency-weighted over the rows).

Pair terms: FM, DeepFM and IPNN the inner product <v_i, v_j>; KFM and KPNN the kernel product
v_i^T W_ij v_j; FFM <V[x_i][j], V[x_j][i]>; NIFM and PIN the sub-net output. The diagonal is zero.
When the data come from a generator that planted interacting pairs (truth.json of the synthetic
Criteo set or of `--planted`), the summary counts how many planted pairs rank among the strongest
cells: the check that the picture means something.

Writes heatmaps.png (row_std), heatmaps_mean_embedding.png, interactions.csv, summary.md,
config.resolved.json and the runs under runs/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from experiments import common
from preprocessing.field_spec import FieldSpec, open_field_files
from preprocessing.synthetic.field_files import write_planted_field_files
from pipeline import config as config_lib

STATISTICS = ("row_std", "mean_embedding")
INNER_PRODUCT_ARCHS = ("fm", "deepfm", "ipnn")
KERNEL_ARCHS = ("kfm", "kpnn")
SUBNET_ARCHS = ("nifm", "pin")
SUPPORTED_ARCHS = INNER_PRODUCT_ARCHS + KERNEL_ARCHS + SUBNET_ARCHS + ("ffm",)


@dataclasses.dataclass(frozen=True)
class HeatmapConfig(common.RunOverlays):
    models: tuple[str, ...] = ("fm", "ffm", "kfm_vec", "ipnn", "kpnn_vec", "pin")
    preset: str = "auto"
    sample_rows: int = 20_000  # validation rows the statistics are computed on
    top_cells: int | None = None  # cells counted as "strongest"; None: the number of planted pairs
    truth_file: str | None = None  # planted pairs; None: looked up beside the data
    # With --planted, under `model:` and `train:` ({model: {}, train: {}}): the 20,000-row set
    # needs more steps than a preset sized for the synthetic Criteo set gives.
    planted_runs: dict = dataclasses.field(default_factory=dict)


CHUNK_ROWS = 2048  # rows per lookup: FFM rows are F * F * k wide


def pair_terms(model, arch: str, embeddings: np.ndarray) -> np.ndarray:
    """The model's pair terms, float64 [B, P, U] (U = 1 except for PIN/NIFM sub-nets).

    Args:
        embeddings: the rows `model.embedding` looks up for B examples (or their mean, B = 1):
            [B, F, k], FFM [B, F, F * k].
    """
    from keras import ops

    from models.layers.pairs import pair_indices

    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"heatmaps: model arch {arch!r} has no pair term here; supported: "
                         f"{', '.join(SUPPORTED_ARCHS)}")
    num_fields = model.num_fields
    rows, cols = pair_indices(num_fields)
    if arch == "ffm":  # V[x_i][j] . V[x_j][i]
        vectors = embeddings.reshape(len(embeddings), num_fields, num_fields, -1)
        return np.sum(vectors[:, rows, cols] * vectors[:, cols, rows], axis=2)[:, :, None]
    mask = getattr(model, "width_mask", None)
    if mask is not None:
        embeddings = embeddings * mask
    if arch in INNER_PRODUCT_ARCHS:
        return np.sum(embeddings[:, rows] * embeddings[:, cols], axis=2)[:, :, None]
    tensor = ops.convert_to_tensor(embeddings.astype(np.float32))
    if arch in KERNEL_ARCHS:
        return ops.convert_to_numpy(model.kernel_product(tensor)).astype(np.float64)[:, :, None]
    return ops.convert_to_numpy(model.subnet(tensor)).astype(np.float64)


def interaction_matrices(model, arch: str, field_ids: np.ndarray) -> dict[str, np.ndarray]:
    """{statistic: symmetric [F, F] strength per field pair, zero diagonal} (module docstring),
    computed CHUNK_ROWS rows at a time."""
    from keras import ops

    from models.layers.pairs import pair_indices

    total = total_squares = embedding_sum = 0.0
    for start in range(0, len(field_ids), CHUNK_ROWS):
        embeddings = ops.convert_to_numpy(
            model.embedding(field_ids[start:start + CHUNK_ROWS])).astype(np.float64)
        terms = pair_terms(model, arch, embeddings)
        total = total + terms.sum(axis=0)
        total_squares = total_squares + np.square(terms).sum(axis=0)
        embedding_sum = embedding_sum + embeddings.sum(axis=0)
    count = len(field_ids)
    variance = np.maximum(total_squares / count - np.square(total / count), 0.0)
    mean_terms = pair_terms(model, arch, (embedding_sum / count)[None])[0]
    values = {"row_std": np.sqrt(variance.sum(axis=1)),
              "mean_embedding": np.linalg.norm(mean_terms, axis=1)}
    rows, cols = pair_indices(model.num_fields)
    matrices = {}
    for statistic in STATISTICS:
        matrix = np.zeros((model.num_fields, model.num_fields))
        matrix[rows, cols] = matrix[cols, rows] = values[statistic]
        matrices[statistic] = matrix
    return matrices


def ranked_pairs(matrix: np.ndarray, names: list[str]) -> list[tuple[str, str, float]]:
    """Upper-triangle cells (field_i, field_j, value), strongest first."""
    rows, cols = np.triu_indices(len(names), k=1)
    order = np.argsort(-matrix[rows, cols], kind="stable")
    return [(names[rows[k]], names[cols[k]], float(matrix[rows[k], cols[k]])) for k in order]


def planted_hits(ranking, planted, top_cells: int | None) -> dict:
    """How many planted pairs are among the `top_cells` strongest cells (default: as many cells
    as planted pairs), with the count a random ranking would give on average."""
    planted = {frozenset(pair) for pair in planted}
    top = len(planted) if top_cells is None else top_cells
    ranks = sorted(rank + 1 for rank, (left, right, _) in enumerate(ranking)
                   if frozenset((left, right)) in planted)
    return {"planted": len(planted), "top_cells": top,
            "hits": sum(rank <= top for rank in ranks),
            "chance": len(planted) * top / len(ranking), "planted_ranks": ranks}


def plot_heatmaps(matrices: dict, names: list[str], path: Path, title: str) -> None:
    """One panel per model; field names on both axes."""
    plt = common.pyplot()
    columns = min(3, len(matrices))
    panel_rows = -(-len(matrices) // columns)
    size = 4.2 if len(names) > 15 else 3.2
    figure, axes = plt.subplots(panel_rows, columns, figsize=(size * columns + 1, size * panel_rows),
                                dpi=110, squeeze=False)
    font = 4.5 if len(names) > 25 else 7
    for axis, (label, matrix) in zip(axes.flat, matrices.items()):
        image = axis.imshow(matrix, cmap="viridis")
        axis.set_title(label, fontsize=9)
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=font)
        axis.set_yticks(range(len(names)), names, fontsize=font)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03)
    for axis in list(axes.flat)[len(matrices):]:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    common.save_figure(figure, path)


def run(config: HeatmapConfig, source: Path, out: Path, force: bool = False) -> dict:
    """Trains the models, writes the figures and tables; returns {model: {statistic: hits}}."""
    spec = FieldSpec.load(source)
    names = spec.field_names
    planted = common.truth_pairs(source, Path(config.truth_file) if config.truth_file else None)
    if planted is not None:
        missing = sorted({name for pair in planted for name in pair} - set(names))
        if missing:
            raise ValueError(f"truth file: planted fields {missing} are not fields of {source}")
    _, splits = open_field_files(source, ("valid",))
    field_ids = np.asarray(splits["valid"].fields[:config.sample_rows])
    matrices = {statistic: {} for statistic in STATISTICS}
    table, results, run_configs = [], {}, {}
    with common.Workspace(out) as workspace:
        tag = workspace.link_data(source)
        for model_id in config.models:
            trained = workspace.train(tag, model_id, model_id,
                                      common.model_overrides(config, model_id),
                                      config.preset, force)
            run_configs[model_id] = trained.config
            model = trained.load_model()
            label = f"{model_id} (AUC {trained.metrics['valid_auc']:.3f})"
            results[model_id] = {}
            for statistic, matrix in interaction_matrices(model, trained.arch, field_ids).items():
                matrices[statistic][label] = matrix
                ranking = ranked_pairs(matrix, names)
                hits = planted_hits(ranking, planted, config.top_cells) if planted else None
                results[model_id][statistic] = hits
                table += [{"model": model_id, "statistic": statistic, "rank": rank + 1,
                           "field_i": left, "field_j": right, "value": value,
                           "planted": bool(planted) and frozenset((left, right)) in
                           {frozenset(pair) for pair in planted}}
                          for rank, (left, right, value) in enumerate(ranking)]
            results[model_id]["metrics"] = trained.metrics
    plot_heatmaps(matrices["row_std"], names, out / "heatmaps.png",
                  "pair-term spread over validation rows (row_std)")
    plot_heatmaps(matrices["mean_embedding"], names, out / "heatmaps_mean_embedding.png",
                  "pair term of the per-field mean embeddings (paper, Fig. 19)")
    common.write_csv(out / "interactions.csv", table)
    (out / "summary.md").write_text(summary(results, table, planted, source))
    common.save_resolved(out, experiment="heatmaps", config=config, data=str(source),
                         planted_pairs=planted, runs=run_configs)
    return results


def summary(results: dict, table: list[dict], planted, source: Path) -> str:
    lines = ["# Feature-interaction heatmaps", "", common.data_description(source), "",
             "![row_std](heatmaps.png)", "", "![mean embedding](heatmaps_mean_embedding.png)", ""]
    if planted:
        lines += [f"Planted pairs ({len(planted)}): "
                  + ", ".join(f"{a}x{b}" for a, b in planted), "",
                  ("| model | valid AUC | statistic | planted pairs in the top cells | chance | "
                   "planted ranks |"), "|---|---|---|---|---|---|"]
        for model_id, result in results.items():
            for statistic in STATISTICS:
                hits = result[statistic]
                lines.append(f"| {model_id} | {result['metrics']['valid_auc']:.4f} | {statistic} "
                             f"| {hits['hits']} of {hits['planted']} in the top "
                             f"{hits['top_cells']} | {hits['chance']:.2f} | "
                             f"{', '.join(map(str, hits['planted_ranks']))} |")
        lines.append("")
    else:
        lines += ["No truth file beside the data: no planted-pair check.", ""]
    lines += ["Strongest cells (row_std):", ""]
    for model_id in results:
        top = [row for row in table if row["model"] == model_id and
               row["statistic"] == "row_std"][:8]
        lines.append(f"- {model_id}: " + ", ".join(
            f"{row['field_i']}x{row['field_j']}{'*' if row['planted'] else ''}" for row in top))
    lines += ["", "(* = planted)", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = common.experiment_parser(__doc__.splitlines()[0])
    parser.add_argument("--planted", action="store_true",
                        help="use a small generated set with strong planted pairs "
                             "(written to OUT/planted_data) instead of --tag/--data")
    args = parser.parse_args(argv)
    config = common.load_experiment_config(HeatmapConfig, "heatmaps", args.config, args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.planted:
        source = args.out.resolve() / "planted_data"
        write_planted_field_files(source)
        config = dataclasses.replace(config, **{
            section: config_lib.merge(config.planted_runs.get(section) or {},
                                      getattr(config, section))
            for section in common.RUN_SECTIONS})
    else:
        source = common.source_folder(args)
    results = run(config, source, args.out, args.force)
    print((args.out / "summary.md").read_text())
    return results


if __name__ == "__main__":
    main()
