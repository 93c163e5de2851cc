"""Stage 07's blend on synthetic predictions: `python bench/blend.py [--scenario S] [--repeats R]`.

Labels come from a known logistic model (true logit z, click rate about 0.25). Each member sees z
through an error shared by all members (so they are correlated) plus its own, and is calibrated
as stage 06 does (`calibrate.calibrate`: the cross-fitted validation predictions, the calibrator
refitted on all validation rows for the test rows). Scenarios:
  four  three decent members (z plus the shared error times 0.6 plus their own errors of 0.5, 0.6
        and 0.7 standard deviations) and a weak one that sees 0.4 z (own error 0.8), 50,000
        validation rows (default);
  many  22 members of mixed quality on 1,429 validation rows, like the real-rows table in README.
The blend is `blend.fit_blend` as stage 07 runs it (method `select`, 20 rounds, seed 2014 halves).

One data set (default): a table of the held-out logloss of each member (members are not fitted
here, so that is their logloss on all validation rows), the plain average, each blend candidate
(cross-fitted) and the one chosen, with the difference to the best member and the standard error
of that paired per-row difference, and the weights (refitted on all validation rows).
`--repeats R`: R fresh data sets, each with as many fresh test rows from the same model; the mean
over data sets of (prediction - best member) on the held-out halves and on the test rows, for the
`select` method, the former default `weighted` (stacking under the two-standard-error guard), the
plain average and the member best on validation (standard errors over the data sets).
`--time ROWS`: the seconds of fit_blend on ROWS rows of 7 members.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ensembles import blend, calibrate, metrics  # noqa: E402
from pipeline import settings  # noqa: E402

SCENARIOS = {"four": 50_000, "many": 1_429}
SEED = 2014  # the pipeline's seed: the validation halves


def member_logits(scenario: str, z: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Raw (uncalibrated) logits of each member for true logits z [N]."""
    rows = len(z)
    shared = rng.standard_normal(rows)
    if scenario == "four":
        members = [z + 0.6 * shared + spread * rng.standard_normal(rows)
                   for spread in (0.5, 0.6, 0.7)]
        return members + [0.4 * z + 0.6 * shared + 0.8 * rng.standard_normal(rows)]
    return [z + 0.5 * shared + rng.uniform(0.3, 1.5) * rng.standard_normal(rows)
            for _ in range(22)]


def make_data(scenario: str, rows: int, seed: int):
    """(names, valid logits [N, K], valid labels, test logits [N, K], test labels): calibrated
    members, validation and test rows from the same model."""
    rng = np.random.default_rng(seed)
    z = -1.3 + 1.0 * rng.standard_normal(2 * rows)
    labels = (rng.random(2 * rows) < metrics.sigmoid(z)).astype(np.uint8)
    raw = member_logits(scenario, z, rng)
    valid, test = [], []
    for column in raw:
        probabilities = metrics.sigmoid(column)
        calibrator, cross_fitted, _ = calibrate.calibrate(
            probabilities[:rows], labels[:rows], settings.CalibrateConfig(), seed=SEED)
        valid.append(metrics.logit(cross_fitted))
        test.append(metrics.logit(calibrator.apply(probabilities[rows:])))
    names = [f"m{index + 1}" for index in range(len(raw))]
    if scenario == "four":
        names[-1] = "m4 (weak)"
    return names, np.column_stack(valid), labels[:rows], np.column_stack(test), labels[rows:]


def paired(labels: np.ndarray, logits: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-row logloss difference (logits - baseline)."""
    difference = (metrics.row_logloss(labels, metrics.sigmoid(logits))
                  - metrics.row_logloss(labels, metrics.sigmoid(baseline)))
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))


def cross_fitted(logits, labels, first_half, fit) -> np.ndarray:
    """Out-of-half logits of `fit(logits, labels) -> (weights, bias)`."""
    result = np.empty(len(labels))
    for half in (first_half, ~first_half):
        weights, bias = fit(logits[~half], labels[~half])
        result[half] = logits[half] @ weights + bias
    return result


def weights_text(names, weights, bias=0.0) -> str:
    text = ", ".join(f"{name} {weight:.2f}" for name, weight in zip(names, weights))
    return text + (f", bias {bias:+.2f}" if bias else "")


def one_data_set(scenario: str, rows: int, seed: int) -> None:
    names, logits, labels, _, _ = make_data(scenario, rows, seed)
    first_half = metrics.split_halves(rows, SEED)
    started = time.perf_counter()
    chosen = blend.fit_blend(logits, labels, "select", first_half, seed=SEED)
    seconds = time.perf_counter() - started
    best = blend.best_member(logits, labels)
    # The candidates' cross-fitted logits (fit_blend keeps the chosen one's only) and weights.
    select_weights = blend.selection_weights(logits, labels, 20)[0]
    stack_weights, stack_bias = blend.fit_weights(logits, labels)
    rows_out = [(name, logits[:, column], "")
                for column, name in enumerate(names)]
    rows_out += [
        ("plain average", logits.mean(axis=1), weights_text(names, np.full(len(names),
                                                                           1 / len(names)))),
        ("single (picked on the other half)",
         cross_fitted(logits, labels, first_half,
                      lambda x, y: (np.eye(x.shape[1])[blend.best_member(x, y)], 0.0)),
         f"{names[best]} 1.00"),
        ("select (Caruana, 20 rounds)",
         cross_fitted(logits, labels, first_half,
                      lambda x, y: (blend.selection_weights(x, y, 20)[0], 0.0)),
         weights_text(names, select_weights)),
        ("weighted (non-negative stacking)",
         cross_fitted(logits, labels, first_half, blend.fit_weights),
         weights_text(names, stack_weights, stack_bias)),
        (f"**chosen: {chosen.method}**", chosen.valid_logits,
         weights_text(names, chosen.weights, chosen.bias))]
    print(f"\nScenario {scenario}: {rows:,} validation rows, {len(names)} members, data seed "
          f"{seed}; click rate {labels.mean():.3f}; fit_blend {seconds:.1f} s\n")
    print("| prediction | held-out logloss | minus best member | SE of the difference | "
          "weights (all rows) |")
    print("|---|---|---|---|---|")
    for name, predicted, weights in rows_out:
        difference, error = paired(labels, predicted, logits[:, best])
        print(f"| {name} | {metrics.logloss(labels, metrics.sigmoid(predicted)):.5f} | "
              f"{difference:+.5f} | {error:.5f} | {weights} |")
    print(f"\nBest member: {names[best]}. Eligible (no worse than the single member on either "
          f"half): {', '.join(chosen.guard['eligible'])}.")


def repeated(scenario: str, rows: int, repeats: int, seed: int) -> None:
    differences = {name: {"held-out": [], "test": []}
                   for name in ("select (new default)", "weighted (former default)",
                                "plain average")}
    chosen_counts: dict[str, int] = {}
    for repeat in range(repeats):
        _, logits, labels, test_logits, test_labels = make_data(scenario, rows, seed + repeat)
        first_half = metrics.split_halves(rows, SEED)
        best = blend.best_member(logits, labels)
        fits = {"select (new default)": blend.fit_blend(logits, labels, "select", first_half,
                                                        seed=SEED),
                "weighted (former default)": blend.fit_blend(logits, labels, "weighted",
                                                             first_half, seed=SEED),
                "plain average": blend.fit_blend(logits, labels, "average", first_half)}
        method = fits["select (new default)"].method
        chosen_counts[method] = chosen_counts.get(method, 0) + 1
        for name, fitted in fits.items():
            differences[name]["held-out"].append(
                paired(labels, fitted.valid_logits, logits[:, best])[0])
            differences[name]["test"].append(
                paired(test_labels, fitted.apply(test_logits), test_logits[:, best])[0])
    print(f"\nScenario {scenario}: {repeats} data sets of {rows:,} validation and {rows:,} test "
          f"rows (data seeds {seed}..{seed + repeats - 1}); `select` chose "
          + ", ".join(f"{name} {count}x" for name, count in sorted(chosen_counts.items()))
          + "\n")
    print("| blend | held-out minus best member | worse on held-out | test minus best member | "
          "worse on test |")
    print("|---|---|---|---|---|")
    for name, values in differences.items():
        cells = []
        for where in ("held-out", "test"):
            series = np.array(values[where])
            cells += [f"{series.mean():+.5f} ± {series.std(ddof=1) / np.sqrt(repeats):.5f}",
                      f"{int(np.sum(series > 1e-12))} of {repeats}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for where in ("held-out", "test"):
        gain = (np.array(differences["select (new default)"][where])
                - np.array(differences["weighted (former default)"][where]))
        print(f"\nselect minus weighted, {where}: {gain.mean():+.5f} ± "
              f"{gain.std(ddof=1) / np.sqrt(repeats):.5f}", end="")
    print("\n\n(best member: the member with the lowest validation logloss; ± one standard "
          "error over the data sets)")


def timing(rows: int) -> None:
    rng = np.random.default_rng(0)
    z = -1.3 + rng.standard_normal(rows)
    labels = (rng.random(rows) < metrics.sigmoid(z)).astype(np.uint8)
    shared = rng.standard_normal(rows)
    logits = np.column_stack([0.7 * (z + 0.5 * shared + rng.uniform(0.5, 1.0)
                                     * rng.standard_normal(rows)) for _ in range(7)])
    blend.select_counts(logits[:1000], labels[:1000], 2)  # compile outside the timing
    first_half = metrics.split_halves(rows, SEED)
    for method in ("select", "weighted"):
        started, cpu = time.perf_counter(), time.process_time()
        fitted = blend.fit_blend(logits, labels, method, first_half, seed=SEED)
        print(f"fit_blend {method} on {rows:,} rows x 7 members: "
              f"{time.perf_counter() - started:.1f} s wall, {time.process_time() - cpu:.1f} s CPU "
              f"(chose {fitted.method})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="four")
    parser.add_argument("--rows", type=int, default=None,
                        help="validation rows (default: the scenario's)")
    parser.add_argument("--seed", type=int, default=1, help="data seed (the first one)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="also R fresh data sets with test rows")
    parser.add_argument("--time", type=int, default=0, metavar="ROWS",
                        help="only time fit_blend on ROWS rows of 7 members")
    args = parser.parse_args(argv)
    if args.time:
        timing(args.time)
        return
    rows = args.rows or SCENARIOS[args.scenario]
    one_data_set(args.scenario, rows, args.seed)
    if args.repeats:
        repeated(args.scenario, rows, args.repeats, args.seed)


if __name__ == "__main__":
    main()
