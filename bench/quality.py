"""Quality benchmark: the pipeline's models and blends beside library baselines, one table.

    python bench/quality.py                       # real rows, then synthetic 200k and 1.2M rows
    python bench/quality.py --sets real --models lr,ffm,ipnn

Each set is run the way a user runs the pipeline, `./run.sh --data DIR --tag quality_<set>`
(stages 00-07, default or --models list), under --out (default /tmp/criteo-pnn-quality):
- `real`: the labelled Criteo rows in ../shared/data/criteo/ (train.txt rows 0-9,999 and the
  chenglongchen subsample of rows 83-206,004), ordered by their position in train.txt, so that
  the pipeline's validation split (the last 1/7) is later in time than the training rows; the
  1,999 guestwalk test rows as test.txt. Skipped when ../shared is absent.
- `synthetic_N` (`synthetic_N_seedS`: generator seed S, another planted model): the project's
  generator with N training rows given as user data (so the model presets follow the row count,
  as for a real sample); its planted truth gives the Bayes logloss, and each model's share of
  the constant-to-Bayes gap it closes.
Baselines on the same train/valid rows: LightGBM with library defaults (raw integers, categorical
values as pandas categories) and scikit-learn logistic regression (defaults) on the one-hot
03_hash ids. Every row of the table is scored on the same validation rows: logloss with its
standard error, AUC, the paired logloss difference to the project's LR with its standard error.
Blends (07_ensemble) are fitted on these validation rows, cross-fitted on halves (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ensembles import metrics  # noqa: E402
from preprocessing import schema  # noqa: E402

SHARED_CRITEO = REPO_ROOT.parent / "shared" / "data" / "criteo"
DEFAULT_SETS = ("real", "synthetic_200000", "synthetic_1200000")


def real_rows(out: Path) -> Path | None:
    """Writes the real labelled rows in train.txt order (and the test rows) under `out`."""
    head, subsample = SHARED_CRITEO / "autoint_train_examples.txt", \
        SHARED_CRITEO / "chenglongchen_tr.rx.csv"
    test = SHARED_CRITEO / "guestwalk_test.tiny.csv"
    if not all(path.exists() for path in (head, subsample, test)):
        return None
    lines = {position: line.rstrip("\n") for position, line in
             enumerate(head.read_text().splitlines())}
    csv = pd.read_csv(subsample, dtype=str, keep_default_na=False)
    for row in csv.itertuples(index=False):
        lines.setdefault(int(row[0]) - 10_000_000, "\t".join(row[1:]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("".join(lines[key] + "\n" for key in sorted(lines)))
    test_rows = pd.read_csv(test, dtype=str, keep_default_na=False)
    (out / "test.txt").write_text("".join("\t".join(row[1:]) + "\n"
                                          for row in test_rows.itertuples(index=False)))
    return out


def synthetic_rows(out: Path, name: str) -> Path:
    """The generator's rows for set `name`: synthetic_<train rows>[_seed<seed>] (the generator's
    default seed without a suffix; another seed plants another model)."""
    size, _, seed = name.removeprefix("synthetic_").partition("_seed")
    if not (out / "train.txt").exists():
        subprocess.run([sys.executable, "-m", "preprocessing.synthetic", "--out", str(out),
                        "--train-rows", size, "--test-rows", str(max(1000, int(size) // 7)),
                        *(["--seed", seed] if seed else [])], cwd=REPO_ROOT, check=True)
    return out


def set_data(name: str, out: Path) -> Path | None:
    """The raw rows of set `name` under `out` (written on first use); None when they are
    absent (the real rows without ../shared)."""
    data = out / f"data_{name}"
    if name == "real":
        return real_rows(data)
    if name.startswith("synthetic_"):
        return synthetic_rows(data, name)
    raise ValueError(f"unknown set {name!r}: real or synthetic_<train rows>[_seed<seed>]")


def run_pipeline(data: Path, tag: str, artifacts: Path, models: list[str] | None,
                 stages: str = "00,01,02,03,04,05,06,07") -> float:
    """`stages` on `data` as a user runs them; returns the seconds taken."""
    command = ["bash", str(REPO_ROOT / "run.sh"), "--data", str(data), "--tag", tag,
               "--only", stages]
    command += ["--set", f"models=[{','.join(models)}]"] if models else []
    environment = {**os.environ, "CRITEO_PNN_ARTIFACTS": str(artifacts), "TQDM_DISABLE": "1"}
    started = time.time()
    subprocess.run(command, cwd=REPO_ROOT, env=environment, check=True)
    return time.time() - started


def present_sets(names: str, out: Path):
    """(name, raw rows folder) of each comma-separated set, skipping (with a line) one whose
    data is absent."""
    for name in names.split(","):
        data = set_data(name, out)
        if data is None:
            print(f"[{name}] skipped: {SHARED_CRITEO} is not present", flush=True)
        else:
            yield name, data


def hashed_sets(names: str, out: Path):
    """(name, 03_hash folder) of each present set, built by stages 00-03 under `out`."""
    for name, data in present_sets(names, out):
        tag = f"quality_{name}"
        run_pipeline(data, tag, out / "artifacts", None, stages="00,01,02,03")
        yield name, out / "artifacts" / tag / "03_hash"


def paired(labels: np.ndarray, runs: dict) -> dict:
    """Two trained runs ({name: experiments.common.TrainedRun}, first then second): their
    validation loglosses, the paired difference (second - first) with its standard error over
    the rows, and each run's epochs (best)."""
    losses = {name: metrics.row_logloss(labels, np.load(run.directory / "valid.pred.npy"))
              for name, run in runs.items()}
    (first, first_losses), (second, second_losses) = losses.items()
    difference = second_losses - first_losses
    return {**{name: values.mean() for name, values in losses.items()},
            f"{second} - {first}": difference.mean(),
            "se": difference.std(ddof=1) / np.sqrt(len(difference)),
            **{f"epochs {name}": f"{run.metrics['epochs']:.2f} ({run.metrics['best_epoch']:.2f})"
               for name, run in runs.items()}}


def print_table(rows) -> None:
    """A table (rows as dicts, or a DataFrame) on stdout, floats to four places."""
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4f}".format):
        print(pd.DataFrame(rows).to_string(index=False))


def lightgbm_defaults(raw_train: Path, train_rows: int, valid_rows: int):
    import lightgbm as lgb
    names = [schema.LABEL_NAME, *schema.FIELD_NAMES]
    frame = pd.read_csv(raw_train, sep="\t", header=None, names=names, nrows=train_rows + valid_rows,
                        dtype={name: "category" for name in schema.FIELD_NAMES
                               if name.startswith("C")})
    features = frame[list(schema.FIELD_NAMES)]
    model = lgb.LGBMClassifier(verbose=-1)
    model.fit(features.iloc[:train_rows], frame[schema.LABEL_NAME].iloc[:train_rows])
    return model.predict_proba(features.iloc[train_rows:])[:, 1]


def sklearn_logistic(hashed: Path):
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    def one_hot(split):
        ids = np.load(hashed / f"{split}.fields.npy")
        rows = np.repeat(np.arange(len(ids)), ids.shape[1])
        return sparse.csr_matrix((np.ones(ids.size), (rows, ids.ravel())),
                                 shape=(len(ids), int(ids.max(initial=0)) + 1))
    train, valid = one_hot("train"), one_hot("valid")
    width = max(train.shape[1], valid.shape[1])
    train.resize(train.shape[0], width)
    valid.resize(valid.shape[0], width)
    model = LogisticRegression(max_iter=1000)
    model.fit(train, np.load(hashed / "train.labels.npy"))
    return model.predict_proba(valid)[:, 1]


def score_set(name: str, tree: Path, data: Path) -> pd.DataFrame:
    hashed = tree / "03_hash"
    labels = np.load(hashed / "valid.labels.npy").astype(np.float64)
    spec = json.loads((hashed / "field_spec.json").read_text())
    train_rows, valid_rows = spec["rows"]["train"], spec["rows"]["valid"]
    predictions = {}
    for folder, kind in ((tree / "05_train", "model"), (tree / "07_ensemble", "blend")):
        for unit in sorted(folder.glob("*/valid.pred.npy")) if folder.exists() else []:
            predictions[f"{kind}: {unit.parent.name}"] = np.load(unit)
    started = time.time()
    predictions["baseline: LightGBM defaults"] = lightgbm_defaults(data / "train.txt",
                                                                   train_rows, valid_rows)
    predictions["baseline: sklearn LR"] = sklearn_logistic(hashed)
    print(f"[{name}] baselines in {time.time() - started:.1f}s", flush=True)
    truth = data / "train.truth.npy"
    bayes = np.load(truth)[train_rows:train_rows + valid_rows] if truth.exists() else None
    bayes_loss = metrics.row_logloss(labels, bayes).mean() if bayes is not None else None
    constant = metrics.row_logloss(labels, np.full(len(labels), labels.mean())).mean()
    reference = metrics.row_logloss(labels, predictions.get("model: lr",
                                                            np.full(len(labels), 0.5)))
    rows = []
    for label, probabilities in predictions.items():
        losses = metrics.row_logloss(labels, probabilities)
        difference = losses - reference
        row = {"set": name, "predictor": label, "valid rows": len(labels),
               "logloss": losses.mean(), "se": losses.std(ddof=1) / np.sqrt(len(losses)),
               "AUC": metrics.auc(labels, probabilities),
               "vs LR": difference.mean(),
               "vs LR se": difference.std(ddof=1) / np.sqrt(len(difference))}
        if bayes is not None:
            row["gap closed"] = (constant - row["logloss"]) / (constant - bayes_loss)
        rows.append(row)
    if bayes is not None:
        rows.append({"set": name, "predictor": "truth: Bayes", "valid rows": len(labels),
                     "logloss": bayes_loss,
                     "AUC": metrics.auc(labels, bayes), "gap closed": 1.0})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS),
                        help="real, synthetic_<train rows>[_seed<seed>] (comma-separated)")
    parser.add_argument("--models", help="model ids (default: the pipeline config's list)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/criteo-pnn-quality"))
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    models = args.models.split(",") if args.models else None
    tables = []
    for name, data in present_sets(args.sets, args.out):
        seconds = run_pipeline(data, f"quality_{name}", args.out / "artifacts", models)
        print(f"[{name}] pipeline in {seconds:.0f}s", flush=True)
        tables.append(score_set(name, args.out / "artifacts" / f"quality_{name}", data))
    if not tables:
        return
    table = pd.concat(tables, ignore_index=True)
    print_table(table)
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
