"""Stage 07: blend models in logit space.

Reads, for each member, `<source>/<id>/{valid,test}.pred.npy` (`ensemble.source`: the calibrated
06_calibrate, or the raw 05_train) and `03_hash/` (validation labels, training click rate).
Writes `07_ensemble/<name>/` per blend in `ensemble.blends`: `weights.json` (each member's weight,
the bias, the candidates' held-out logloss and the method chosen), `valid.pred.npy`,
`test.pred.npy`, `metrics.json` (every member, every candidate on the held-out halves, the choice)
and `reliability.png`.

Candidates, each a blend logit(p) = sum_i w_i logit(p_i) + b:
  select    greedy forward selection with replacement (Caruana et al., "Ensemble selection from
            libraries of models", ICML 2004): start from nothing, add the member whose addition
            most lowers the logloss of the averaged logits (the first pick is the best single
            member), `rounds` times; keep the best prefix. w_i = picks of i / picks, b = 0, so a
            member that never helps gets weight 0 and a duplicate of a picked member is never
            picked (ties go to the first). With `bags` > 1 the selection is repeated on random
            halves of the members and the weights averaged (Caruana's bagged selection);
  weighted  non-negative stacking: w_i >= 0 and a free b minimising the logloss (L-BFGS-B);
  average   the plain mean of the members' logits (not fitted);
  single    the best member by logloss.
Fitted weights can chase noise (many members, a small validation split), so every candidate is
cross-fitted on two random halves of the validation split: fitted on one half, scored on the
other, both ways (the single member too: picked on one half, scored on the other). Method:
  select    (the default) keeps, among the candidates no worse than the single member on either
            held-out half, the one with the lowest held-out logloss (ties within TIE: the
            simplest, in the order single, average, select, weighted). So the blend is never
            worse on the held-out halves than the single member picked on the other half, and a
            weak member cannot pull it below the best one: an average it drags down is not
            chosen, and selection and stacking give it a weight of about 0;
  weighted  the former rule: stacking replaces the fallback (the plain average if it is no worse
            than the single member on either half and better overall, else the single member)
            only if it beats it on both held-out halves by at least two standard errors of the
            per-row gain (`metrics.held_out_comparison`). Where rows are few for the members
            this guard keeps the fallback even when a fitted candidate did better on the held-out
            halves (bench/blend.py --scenario many --repeats R);
  average   the plain mean, nothing fitted.
The choice (weights, the single member) is refitted on the whole validation split for the test
predictions; `valid.pred.npy` holds the cross-fitted (out-of-half) predictions of the chosen
candidate, whose logloss is therefore an honest estimate (up to the small optimism of keeping the
lowest of four). A one-member blend is that member.

Reported metrics use scikit-learn's log_loss (`ensembles.metrics`); the selection's inner loop,
which scores every member at every step, computes the same mean cross-entropy in a compiled kernel
from the logits (a test checks the two agree).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numba
import numpy as np

from ensembles import metrics, read_predictions, write_predictions
from preprocessing.field_spec import open_field_files
from pipeline import config as config_lib
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir

# As in preprocessing/parse.py (read when numba starts its threads, at the first parallel call):
# OpenMP threads spinning between the selection's parallel loops would slow the Python steps.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

FITTED_CANDIDATES = {"select": ("select", "weighted"), "weighted": ("weighted",)}
BAG_FRACTION = 0.5  # members drawn for each bag of a bagged selection (Caruana et al.: 0.5)
# Held-out loglosses this close are a tie, settled for the simpler candidate (the mean of identical
# members differs from each of them by rounding only).
TIE = 1e-12
_CHUNKS = 64  # fixed row chunks of the kernel: the sums do not depend on the thread count


def fit_weights(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights [K] and a free intercept minimising the blend's logloss (stacking).

    Args:
        logits: float64 [N, K], the members' logits.
        labels: [N] 0/1.
    """
    members = logits.shape[1]
    features = np.column_stack([logits, np.ones(len(logits))])
    nonnegative = np.array([True] * members + [False])
    coefficients = metrics.fit_logistic(features, labels, nonnegative=nonnegative)
    return coefficients[:-1], float(coefficients[-1])


@numba.njit(cache=True, nogil=True, parallel=True)
def _softplus_sums(total: np.ndarray, logits: np.ndarray, scale: float) -> np.ndarray:
    """[K]: sum over rows of softplus((total[row] + logits[row, k]) * scale), for every k."""
    rows, members = logits.shape
    partial = np.zeros((_CHUNKS, members))
    for chunk in numba.prange(_CHUNKS):
        for row in range(chunk * rows // _CHUNKS, (chunk + 1) * rows // _CHUNKS):
            base = total[row]
            for member in range(members):
                z = (base + logits[row, member]) * scale
                # log(1 + t), t in (0, 1]: absolute error ~1e-16, and 1.5x faster than
                # log1p here.
                partial[chunk, member] += max(z, 0.0) + np.log(1.0 + np.exp(-abs(z)))
    return partial.sum(axis=0)


def select_counts(logits: np.ndarray, labels: np.ndarray,
                  rounds: int) -> tuple[np.ndarray, list[float]]:
    """Greedy forward selection with replacement on logits [N, K].

    Each of `rounds` steps adds the member that gives the averaged logits of the picks so far the
    lowest logloss (ties: the first such member), even when no member lowers it. Returns the
    picks per member [K] (int) of the prefix with the lowest logloss (the shortest on ties) and
    the logloss after each step. The logloss of mean logits z is mean(softplus(z) - y z); the
    label term is linear, so only the softplus needs a pass over the rows per member and step.
    """
    logits = np.ascontiguousarray(logits, np.float64)
    rows, members = logits.shape
    labels = np.asarray(labels, np.float64)
    label_dots = labels @ logits  # [K]: sum_rows y logit_k
    total, total_dot = np.zeros(rows), 0.0
    counts = np.zeros(members, np.int64)
    best_counts, best_loss, history = counts.copy(), math.inf, []
    for step in range(1, rounds + 1):
        scale = 1.0 / step
        losses = (_softplus_sums(total, logits, scale) - (total_dot + label_dots) * scale) / rows
        pick = int(np.argmin(losses))
        counts[pick] += 1
        total += logits[:, pick]
        total_dot += label_dots[pick]
        history.append(float(losses[pick]))
        if losses[pick] < best_loss:
            best_counts, best_loss = counts.copy(), float(losses[pick])
    return best_counts, history


def selection_weights(logits: np.ndarray, labels: np.ndarray, rounds: int, bags: int = 1,
                      rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
    """Weights [K] (>= 0, summing to 1) of a greedy selection on logits [N, K], and what was
    picked ({"picks": per member, summed over bags; "size": picks kept per bag}). With `bags` > 1
    each bag selects among a random BAG_FRACTION of the members (`rng`, drawn in order, so
    the result is fixed by the seed) and the bags' weights are averaged."""
    members = logits.shape[1]
    weights, picks, sizes = np.zeros(members), np.zeros(members, np.int64), []
    for _ in range(bags):
        subset = np.arange(members)
        if bags > 1:
            if rng is None:
                raise ValueError("selection_weights: bags > 1 needs an rng")
            size = max(1, math.ceil(BAG_FRACTION * members))
            subset = np.sort(rng.choice(members, size, replace=False))
        counts, _ = select_counts(logits[:, subset], labels, rounds)
        weights[subset] += counts / counts.sum()
        picks[subset] += counts
        sizes.append(int(counts.sum()))
    return weights / bags, {"picks": picks.tolist(), "size": sizes}


def best_member(logits: np.ndarray, labels: np.ndarray) -> int:
    """Column of `logits` [N, K] with the lowest logloss."""
    return int(np.argmin([metrics.logloss(labels, metrics.sigmoid(column)) for column in logits.T]))


@dataclasses.dataclass
class Blend:
    """A fitted blend: logit(blend) = logits @ weights + bias."""
    method: str  # the candidate kept: "select", "weighted", "average" or "single"
    weights: np.ndarray  # [K]
    bias: float
    valid_logits: np.ndarray  # [N], cross-fitted when fitted or single
    guard: dict  # the rule, the eligible candidates and the comparison that decided
    held_out_logloss: dict = dataclasses.field(default_factory=dict)  # candidate -> logloss
    half_logloss: dict = dataclasses.field(default_factory=dict)  # candidate -> [half 1, half 2]
    # candidate -> metrics.held_out_comparison with the baseline ("single" for method select)
    comparisons: dict = dataclasses.field(default_factory=dict)
    details: dict = dataclasses.field(default_factory=dict)  # the selection's picks when chosen

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return logits @ self.weights + self.bias


def fit_candidate(name: str, logits: np.ndarray, labels: np.ndarray, rounds: int, bags: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, float, dict]:
    """(weights [K], bias, details) of fitted candidate `name` ("select" or "weighted")."""
    if name == "select":
        weights, details = selection_weights(logits, labels, rounds, bags, rng)
        return weights, 0.0, details
    weights, bias = fit_weights(logits, labels)
    return weights, bias, {}


def fit_blend(logits: np.ndarray, labels: np.ndarray, method: str, first_half: np.ndarray,
              rounds: int = 20, bags: int = 1, seed: int = 0) -> Blend:
    """Fits `method` on validation logits [N, K] (see the module docstring): "select" keeps the
    lowest held-out logloss of selection, stacking, the plain average and the single member among
    those no worse than the single member on either half; "weighted" keeps stacking only if it
    clearly beats the better of the average and the single member; "average" is the plain mean.
    `first_half` [N] bool splits the rows for the cross-fit; `rounds` and `bags` are the
    selection's; `seed` draws the bags of a bagged selection."""
    members = logits.shape[1]
    average = Blend("average", np.full(members, 1.0 / members), 0.0, logits.mean(axis=1), {})
    if method == "average":
        return average
    if method not in FITTED_CANDIDATES:
        raise ValueError(f"ensemble.blends[].method: unknown method {method!r}; known: "
                         f"{[*FITTED_CANDIDATES, 'average']}")
    halves = (first_half, ~first_half)
    if members == 1:
        only = logits[:, 0].copy()
        return Blend("single", np.ones(1), 0.0, only, {},
                     {"single": metrics.logloss(labels, metrics.sigmoid(only))},
                     {"single": [metrics.logloss(labels[half], metrics.sigmoid(only[half]))
                                 for half in halves]})
    fitted = FITTED_CANDIDATES[method]
    cross = {name: np.empty(len(labels)) for name in (*fitted, "single")}
    for part, half in enumerate(halves):
        fit_logits, fit_labels = logits[~half], labels[~half]
        for name in fitted:
            weights, bias, _ = fit_candidate(name, fit_logits, fit_labels, rounds, bags,
                                             np.random.default_rng([seed, part]))
            cross[name][half] = logits[half] @ weights + bias
        cross["single"][half] = logits[half, best_member(fit_logits, fit_labels)]
        del fit_logits
    cross["average"] = average.valid_logits
    predictions = {name: metrics.sigmoid(candidate) for name, candidate in cross.items()}
    held_out = {name: metrics.logloss(labels, predicted) for name, predicted in predictions.items()}
    half_logloss = {name: [metrics.logloss(labels[half], predicted[half]) for half in halves]
                    for name, predicted in predictions.items()}
    # Eligible: no worse than the single member on either held-out half; listed simplest
    # first.
    eligible = [name for name in ("single", "average", *fitted)
                if all(c <= s for c, s in zip(half_logloss[name], half_logloss["single"]))]
    if method == "select":
        baseline = "single"
        others = ("average", *fitted)
        comparisons = {name: {**metrics.held_out_comparison(labels, predictions[name],
                                                            predictions[baseline], first_half),
                              "baseline": baseline, "candidate": name}
                       for name in others}
        lowest = min(held_out[name] for name in eligible)
        chosen = next(name for name in eligible if held_out[name] <= lowest + TIE)
        guard = {**comparisons[chosen if chosen != baseline else min(others, key=held_out.get)],
                 "rule": "lowest held-out logloss among the candidates no worse than the single "
                         "member on either held-out half"}
    else:  # "weighted": stacking must clearly beat the better fallback
        baseline = "average" if "average" in eligible and \
            held_out["average"] < held_out["single"] else "single"
        comparisons = {name: {**metrics.held_out_comparison(labels, predictions[name],
                                                            predictions[baseline], first_half),
                              "baseline": baseline, "candidate": name}
                       for name in fitted}
        kept = [name for name in fitted if comparisons[name]["better"]]
        chosen = min(kept, key=held_out.get) if kept else baseline
        guard = {**comparisons[min(kept or fitted, key=held_out.get)],
                 "rule": f"beats {baseline} on both held-out halves by >= {metrics.MIN_GAIN_Z} "
                         "standard errors"}
    guard["eligible"] = eligible
    found = {"guard": guard, "held_out_logloss": held_out, "half_logloss": half_logloss,
             "comparisons": comparisons}
    if chosen == "average":
        return dataclasses.replace(average, **found)
    if chosen == "single":
        return Blend("single", np.eye(members)[best_member(logits, labels)], 0.0, cross["single"],
                     **found)
    weights, bias, details = fit_candidate(chosen, logits, labels, rounds, bags,
                                           np.random.default_rng([seed, len(halves)]))
    return Blend(chosen, weights, bias, cross[chosen], details=details, **found)


def blend_members(blend: settings.BlendConfig, config: settings.PipelineConfig) -> tuple[str, ...]:
    members = blend.members or config.models
    if not members:
        raise ValueError(f"ensemble.blends[{blend.name}].members: empty and `models` is empty")
    if len(set(members)) != len(members):
        raise ValueError(f"ensemble.blends[{blend.name}].members: duplicates in {list(members)}")
    return tuple(members)


def blend_config(config: settings.PipelineConfig, name: str) -> settings.BlendConfig:
    names = [blend.name for blend in config.ensemble.blends]
    if len(set(names)) != len(names):
        raise ValueError(f"ensemble.blends: duplicate names in {names}")
    if name not in names:
        raise ValueError(f"ensemble.blends: no blend named {name!r}; known: {names}")
    return config.ensemble.blends[names.index(name)]


def make_stage(tag: str, config: settings.PipelineConfig, name: str) -> Stage:
    blend = blend_config(config, name)
    members = blend_members(blend, config)
    source = config.ensemble.source
    stage_settings = {"blend": {**config_lib.to_dict(blend), "members": list(members)},
                      "source": source, "seed": config.seed}
    return Stage(tag, "07_ensemble", stage_settings,
                 inputs=[stage_dir(tag, source, member) for member in members]
                 + [stage_dir(tag, "03_hash")], unit=name)


def make_stages(tag: str, config: settings.PipelineConfig) -> list[Stage]:
    return [make_stage(tag, config, blend.name) for blend in config.ensemble.blends]


def build_blend(tag: str, config: settings.PipelineConfig, name: str,
                force: bool = False) -> dict | None:
    """Builds `07_ensemble/<name>/`; returns its metrics (None when up to date)."""
    stage = make_stage(tag, config, name)
    if not stage.should_run(force):
        return None
    blend_settings = blend_config(config, name)
    members = blend_members(blend_settings, config)
    source = config.ensemble.source
    spec, splits = open_field_files(stage_dir(tag, "03_hash"), splits=("valid",))
    labels = np.asarray(splits["valid"].labels)
    folders = [stage_dir(tag, source, member) for member in members]
    valid = np.column_stack([read_predictions(folder, "valid", spec.rows["valid"])
                             for folder in folders])
    valid_logits = metrics.logit(valid)
    blend = fit_blend(valid_logits, labels, blend_settings.method,
                      metrics.split_halves(len(labels), config.seed),
                      rounds=blend_settings.rounds, bags=blend_settings.bags, seed=config.seed)
    base_rate = spec.label_rate["train"]
    predictions = metrics.sigmoid(blend.valid_logits)
    average = metrics.sigmoid(valid_logits.mean(axis=1))
    weights = dict(zip(members, blend.weights.tolist()))
    candidates = {candidate: {"held_out_logloss": logloss,
                              "half_logloss": blend.half_logloss.get(candidate)}
                  for candidate, logloss in blend.held_out_logloss.items()}
    for candidate, comparison in blend.comparisons.items():
        candidates[candidate].update(gain_z=comparison["gain_z"], better=comparison["better"],
                                     baseline=comparison["baseline"])
    selection = None
    if "picks" in blend.details:
        selection = {"rounds": blend_settings.rounds, "bags": blend_settings.bags,
                     "picks": dict(zip(members, blend.details["picks"])),
                     "size": blend.details["size"]}
    result = {"name": name, "method": blend.method, "requested_method": blend_settings.method,
              "source": source, "members": list(members), "weights": weights, "bias": blend.bias,
              **metrics.summary(labels, predictions, base_rate),
              # The final weights on the rows they were fitted on (not an honest estimate).
              "in_sample_logloss": metrics.logloss(labels,
                                                   metrics.sigmoid(blend.apply(valid_logits))),
              "average": metrics.summary(labels, average, base_rate),
              "member_metrics": {member: metrics.summary(labels, valid[:, column], base_rate)
                                 for column, member in enumerate(members)},
              "single_member": members[int(np.argmax(blend.weights))]
              if blend.method == "single" else None,
              "guard": blend.guard, "held_out_logloss": blend.held_out_logloss,
              "candidates": candidates, "selection": selection}
    del valid, valid_logits
    chosen = {"select": "selected ensemble", "weighted": "stacked weights",
              "average": "plain average",
              "single": f"single member {result['single_member']}"}[blend.method]
    with stage.build() as out:
        test = np.column_stack([metrics.logit(read_predictions(folder, "test", spec.rows["test"]))
                                for folder in folders])
        write_predictions(out, "valid", predictions)
        write_predictions(out, "test", metrics.sigmoid(blend.apply(test)))
        (out / "weights.json").write_text(json.dumps(
            {"space": "logit", "method": blend.method, "requested_method": blend_settings.method,
             "source": source, "weights": weights, "bias": blend.bias,
             "held_out_logloss": blend.held_out_logloss, "selection": selection}, indent=1) + "\n")
        (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
        curves = {"plain average": average}
        if blend.method != "average":
            curves[chosen] = predictions
        metrics.plot_reliability(labels, curves, out / "reliability.png",
                                title=f"{name}: validation")
        stage.record(metrics={key: result[key] for key in
                              ("method", "valid_logloss", "valid_auc", "weights")})
    best = min(result["member_metrics"].items(), key=lambda item: item[1]["valid_logloss"])
    held_out = ", ".join(f"{key} {value:.5f}" for key, value in blend.held_out_logloss.items())
    weighted = ", ".join(f"{member} {weight:.2f}" for member, weight in
                         sorted(weights.items(), key=lambda item: -item[1]) if weight > 0)
    print(f"  {name}: {chosen} of {len(members)} ({source}; {weighted}), logloss "
          f"{result['valid_logloss']:.5f}; plain average {result['average']['valid_logloss']:.5f}; "
          f"best member {best[0]} {best[1]['valid_logloss']:.5f}"
          + (f"; held-out logloss {held_out}" if held_out else ""))
    return result


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--blend", action="append", default=[],
                        help="build only this blend name (repeatable; default: ensemble.blends)")
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    for name in args.blend or [blend.name for blend in config.ensemble.blends]:
        build_blend(args.tag, config, name, force=args.force)


if __name__ == "__main__":
    main()
