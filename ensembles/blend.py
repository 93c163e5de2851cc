"""Stage 07: blend models in logit space.

Reads, for each member, `<source>/<id>/{valid,test}.pred.npy` (`ensemble.source`: the calibrated
06_calibrate, or the raw 05_train) and `03_hash/` (validation labels, training click rate).
Writes `07_ensemble/<name>/` per blend in `ensemble.blends`: `weights.json`, `valid.pred.npy`,
`test.pred.npy`, `metrics.json` (every member, the plain average, the fitted blend, which was kept)
and `reliability.png`.

Methods:
  average   the plain mean of the members' logits;
  weighted  sigmoid(sum_i w_i logit(p_i) + b) with w_i >= 0 and b fitted on validation logloss.
Fitted weights can chase noise (many members, a small validation split), so they are
cross-fitted on two random halves of the validation split: fitted on one half, scored on the
other, both ways. The fallback is the better, by held-out logloss, of the plain average and the
best single member (picked on one half, scored on the other: a weak member drags the average
below the best model). The fitted blend is kept only if it beats that fallback on both held-out
halves by at least two standard errors of the per-row gain (`metrics.held_out_comparison`);
otherwise the fallback is used (method `average` or `single`). Fitted choices (weights, the
single member) are refitted on the whole validation split for the test predictions, and
`valid.pred.npy` holds the cross-fitted (out-of-half) predictions, whose logloss is therefore an
honest estimate. `metrics.json` reports each candidate's held-out logloss and the choice.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ensembles import metrics, read_predictions, report, write_predictions
from preprocessing.field_spec import open_field_files
from stages import config as config_lib
from stages import settings
from stages.manifest import Stage
from stages.paths import stage_dir



def fit_weights(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights [K] and a free intercept minimising the blend's logloss.

    Args:
        logits: float64 [N, K], the members' logits.
        labels: [N] 0/1.
    """
    members = logits.shape[1]
    features = np.column_stack([logits, np.ones(len(logits))])
    nonnegative = np.array([True] * members + [False])
    coefficients = metrics.fit_logistic(features, labels, nonnegative=nonnegative)
    return coefficients[:-1], float(coefficients[-1])


def best_member(logits: np.ndarray, labels: np.ndarray) -> int:
    """Column of `logits` [N, K] with the lowest logloss."""
    return int(np.argmin([metrics.logloss(labels, metrics.sigmoid(column)) for column in logits.T]))


@dataclasses.dataclass
class Blend:
    """A fitted blend: logit(blend) = logits @ weights + bias."""
    method: str  # "weighted", "average" or "single" (the last two also when "weighted" fell back)
    weights: np.ndarray  # [K]
    bias: float
    valid_logits: np.ndarray  # [N], cross-fitted when weighted or single
    guard: dict  # metrics.held_out_comparison of the fitted blend with the fallback
    held_out_logloss: dict = dataclasses.field(default_factory=dict)  # candidate -> logloss

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return logits @ self.weights + self.bias


def fit_blend(logits: np.ndarray, labels: np.ndarray, method: str, first_half: np.ndarray) -> Blend:
    """Fits `method` on validation logits [N, K]; "weighted" falls back to the better of the plain
    average and the best single member unless it clearly beats that on the held-out halves."""
    members = logits.shape[1]
    average = Blend("average", np.full(members, 1.0 / members), 0.0, logits.mean(axis=1), {})
    if method == "average":
        return average
    if method != "weighted":
        raise ValueError(f"ensemble.blends[].method: unknown method {method!r}")
    weighted_logits, single_logits = np.empty(len(labels)), np.empty(len(labels))
    for half in (first_half, ~first_half):
        weights, bias = fit_weights(logits[~half], labels[~half])
        weighted_logits[half] = logits[half] @ weights + bias
        single_logits[half] = logits[half, best_member(logits[~half], labels[~half])]
    single = Blend("single", np.eye(members)[best_member(logits, labels)], 0.0, single_logits, {})
    held_out = {name: metrics.logloss(labels, metrics.sigmoid(candidate))
                for name, candidate in (("weighted", weighted_logits),
                                        ("average", average.valid_logits),
                                        ("single", single_logits))}
    fallback = min((average, single), key=lambda blend: held_out[blend.method])
    guard = {**metrics.held_out_comparison(labels, metrics.sigmoid(weighted_logits),
                                           metrics.sigmoid(fallback.valid_logits), first_half),
             "baseline": fallback.method}
    if not guard["better"]:
        return dataclasses.replace(fallback, guard=guard, held_out_logloss=held_out)
    weights, bias = fit_weights(logits, labels)
    return Blend("weighted", weights, bias, weighted_logits, guard, held_out)


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
    blend = fit_blend(metrics.logit(valid), labels, blend_settings.method,
                      metrics.split_halves(len(labels), config.seed))
    base_rate = spec.label_rate["train"]
    predictions = metrics.sigmoid(blend.valid_logits)
    average = metrics.sigmoid(metrics.logit(valid).mean(axis=1))
    weights = dict(zip(members, blend.weights.tolist()))
    result = {"name": name, "method": blend.method, "requested_method": blend_settings.method,
              "source": source, "members": list(members), "weights": weights, "bias": blend.bias,
              **metrics.summary(labels, predictions, base_rate),
              "average": metrics.summary(labels, average, base_rate),
              "member_metrics": {member: metrics.summary(labels, valid[:, column], base_rate)
                                 for column, member in enumerate(members)},
              "single_member": members[int(np.argmax(blend.weights))]
              if blend.method == "single" else None,
              "guard": blend.guard, "held_out_logloss": blend.held_out_logloss}
    del valid
    chosen = {"weighted": "weighted blend", "average": "plain average",
              "single": f"single member {result['single_member']}"}[blend.method]
    with stage.build() as out:
        test = np.column_stack([metrics.logit(read_predictions(folder, "test", spec.rows["test"]))
                                for folder in folders])
        write_predictions(out, "valid", predictions)
        write_predictions(out, "test", metrics.sigmoid(blend.apply(test)))
        (out / "weights.json").write_text(json.dumps(
            {"space": "logit", "method": blend.method, "source": source,
             "weights": weights, "bias": blend.bias}, indent=1) + "\n")
        (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
        curves = {"plain average": average}
        if blend.method != "average":
            curves[chosen] = predictions
        report.plot_reliability(labels, curves, out / "reliability.png",
                                title=f"{name}: validation")
        stage.record(metrics={key: result[key] for key in
                              ("method", "valid_logloss", "valid_auc", "weights")})
    best = min(result["member_metrics"].items(), key=lambda item: item[1]["valid_logloss"])
    held_out = ", ".join(f"{key} {value:.5f}" for key, value in blend.held_out_logloss.items())
    print(f"  {name}: {chosen} of {len(members)} ({source}), logloss "
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
