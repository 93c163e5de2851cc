"""Stage 06: calibrate each model's probabilities on the validation split.

Reads `05_train/<id>/{valid,test}.pred.npy`, `metrics.json` and `03_hash/` (validation labels,
training click rate). Writes `06_calibrate/<id>/`: `calibrator.json`, `valid.pred.npy`,
`test.pred.npy`, `metrics.json`, `reliability.png`.

Methods (`calibrate.method`):
  none           the model's probabilities;
  winners_shift  the 2014 winners' fixed rule, p > 0.0035 => p - 0.003 (not fitted);
  logit_shift    a fitted constant added to the logit;
  platt          a fitted scale and shift of the logit (Platt scaling);
  isotonic       a fitted monotone step function (sklearn IsotonicRegression).
A model trained on down-sampled negatives (keep rate w) is first corrected with
q = p / (p + (1 - p) / w), i.e. logit(q) = logit(p) + log(w); the rate comes from
`calibrate.negative_sampling_rate` or the model's metrics.json key `negative_sampling_rate`.

Choosing on the rows a method was fitted on would always favour isotonic regression, so `auto`
cross-fits: the validation split is cut into two random halves, each method is fitted on one
half and scored on the other, both ways. A method replaces `none` only if it is better on both
held-out halves and its per-row gain is at least two standard errors (`metrics.MIN_GAIN_Z`), so a
noise-sized win does not count; among those the lowest cross-fitted logloss wins. The chosen
method is then refitted on the whole validation split for the test predictions, while
`valid.pred.npy` keeps the cross-fitted (out-of-half) predictions, so its logloss is an honest
estimate and stage 07 fits blend weights on predictions the calibrator has not seen.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ensembles import metrics, read_predictions, write_predictions
from preprocessing.field_spec import open_field_files
from pipeline import config as config_lib
from pipeline import errors
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.metrics import correct_negative_sampling
from pipeline.paths import stage_dir

WINNERS_THRESHOLD = 0.0035  # 3 Idiots, utils/calibrate.py
WINNERS_SHIFT = 0.003


def winners_shift(probabilities: np.ndarray) -> np.ndarray:
    """The winners' rule: predictions above 0.0035 are lowered by 0.003, the rest kept."""
    probabilities = np.asarray(probabilities, np.float64)
    return np.where(probabilities > WINNERS_THRESHOLD, probabilities - WINNERS_SHIFT,
                    probabilities)


def fit(method: str, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """The parameters of `method` fitted on (probabilities, labels); JSON-able."""
    logits = metrics.logit(probabilities)
    ones = np.ones((len(logits), 1))
    if method in ("none", "winners_shift"):
        return {}
    if method == "logit_shift":
        (shift,) = metrics.fit_logistic(ones, labels, offset=logits)
        return {"shift": float(shift)}
    if method == "platt":
        scale, shift = metrics.fit_logistic(np.column_stack([logits, ones]), labels)
        return {"scale": float(scale), "shift": float(shift)}
    if method == "isotonic":
        model = IsotonicRegression(y_min=metrics.EPSILON, y_max=1 - metrics.EPSILON,
                                   out_of_bounds="clip")
        model.fit(np.asarray(probabilities, np.float64), labels)
        return {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    raise errors.InputError(f"calibrate.method: unknown method {method!r}; known: "
                     f"{settings.CALIBRATION_METHODS}")


def transform(method: str, params: dict, probabilities: np.ndarray) -> np.ndarray:
    """Applies a fitted `method` to probabilities; float64 [N] in [EPSILON, 1 - EPSILON]."""
    probabilities = np.asarray(probabilities, np.float64)
    if method == "none":
        result = probabilities
    elif method == "winners_shift":
        result = winners_shift(probabilities)
    elif method == "logit_shift":
        result = metrics.sigmoid(metrics.logit(probabilities) + params["shift"])
    elif method == "platt":
        result = metrics.sigmoid(params["scale"] * metrics.logit(probabilities) + params["shift"])
    elif method == "isotonic":
        # IsotonicRegression.predict interpolates linearly between thresholds and clips outside.
        result = np.interp(probabilities, params["x"], params["y"])
    else:
        raise errors.InputError(f"unknown calibration method {method!r}")
    return np.clip(result, metrics.EPSILON, 1 - metrics.EPSILON)


@dataclasses.dataclass(frozen=True)
class Calibrator:
    """A fitted calibration, saved as calibrator.json."""
    method: str
    params: dict
    negative_sampling_rate: float = 1.0

    @classmethod
    def fit(cls, method: str, probabilities: np.ndarray, labels: np.ndarray,
            negative_sampling_rate: float = 1.0) -> Calibrator:
        corrected = correct_negative_sampling(probabilities, negative_sampling_rate)
        return cls(method, fit(method, corrected, labels), negative_sampling_rate)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        corrected = correct_negative_sampling(probabilities, self.negative_sampling_rate)
        return transform(self.method, self.params, corrected)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Calibrator:
        return cls(**data)


def cross_fit(method: str, probabilities: np.ndarray, labels: np.ndarray, first_half: np.ndarray,
              negative_sampling_rate: float = 1.0) -> np.ndarray:
    """Out-of-half predictions: each half calibrated by `method` fitted on the other half."""
    result = np.empty(len(probabilities))
    for half in (first_half, ~first_half):
        calibrator = Calibrator.fit(method, probabilities[~half], labels[~half],
                                    negative_sampling_rate)
        result[half] = calibrator.apply(probabilities[half])
    return result


def compare_methods(probabilities: np.ndarray, labels: np.ndarray, candidates,
                    first_half: np.ndarray, negative_sampling_rate: float = 1.0) -> dict:
    """{method: {"cross_fit_logloss", "half_logloss", "gain_z", "better", "predictions"}}, each
    method compared with "none" (always included) on the held-out halves."""
    predictions = {method: cross_fit(method, probabilities, labels, first_half,
                                     negative_sampling_rate)
                   for method in dict.fromkeys(("none", *candidates))}
    table = {}
    for method, predicted in predictions.items():
        comparison = metrics.held_out_comparison(labels, predicted, predictions["none"], first_half)
        table[method] = {"cross_fit_logloss": metrics.logloss(labels, predicted),
                         "half_logloss": comparison["half_logloss"],
                         "gain_z": comparison["gain_z"], "better": comparison["better"],
                         "predictions": predicted}
    return table


def choose(table: dict) -> str:
    """The lowest cross-fitted logloss among "none" and the methods clearly better than it."""
    eligible = ["none"] + [method for method, row in table.items() if row["better"]]
    return min(eligible, key=lambda method: table[method]["cross_fit_logloss"])


def negative_sampling_rate(config: settings.CalibrateConfig, model_metrics: dict) -> float:
    if config.negative_sampling_rate is not None:
        return config.negative_sampling_rate
    return float(model_metrics.get("negative_sampling_rate", 1.0))


def calibrate(probabilities: np.ndarray, labels: np.ndarray, config: settings.CalibrateConfig,
              seed: int, rate: float = 1.0) -> tuple[Calibrator, np.ndarray, dict]:
    """Chooses (or takes) a method, fits it on all of `labels`.

    Returns the calibrator, the cross-fitted validation predictions [N] and the comparison
    table (without predictions) for metrics.json.
    """
    first_half = metrics.split_halves(len(labels), seed)
    candidates = config.candidates if config.method == "auto" else \
        (*config.candidates, config.method)
    table = compare_methods(probabilities, labels, candidates, first_half, rate)
    method = choose(table) if config.method == "auto" else config.method
    calibrator = Calibrator.fit(method, probabilities, labels, rate)
    valid_predictions = table[method]["predictions"]
    for row in table.values():
        del row["predictions"]
    return calibrator, valid_predictions, table


def stage_config(config: settings.PipelineConfig, model_id: str) -> dict:
    return {"model_id": model_id, "calibrate": config_lib.to_dict(config.calibrate),
            "seed": config.seed}


def make_stage(tag: str, config: settings.PipelineConfig, model_id: str) -> Stage:
    return Stage(tag, "06_calibrate", stage_config(config, model_id),
                 inputs=[stage_dir(tag, "05_train", model_id), stage_dir(tag, "03_hash")],
                 unit=model_id)


def make_stages(tag: str, config: settings.PipelineConfig) -> list[Stage]:
    return [make_stage(tag, config, model_id) for model_id in config.models]


def calibrate_model(tag: str, config: settings.PipelineConfig, model_id: str,
                    force: bool = False) -> dict | None:
    """Builds `06_calibrate/<model_id>/`; returns its metrics (None when up to date)."""
    stage = make_stage(tag, config, model_id)
    if not stage.should_run(force):
        return None
    source = stage_dir(tag, "05_train", model_id)
    spec, splits = open_field_files(stage_dir(tag, "03_hash"), splits=("valid",))
    labels = np.asarray(splits["valid"].labels)
    valid = read_predictions(source, "valid", spec.rows["valid"])
    test = read_predictions(source, "test", spec.rows["test"])
    model_metrics = json.loads((source / "metrics.json").read_text())
    rate = negative_sampling_rate(config.calibrate, model_metrics)
    calibrator, calibrated, table = calibrate(valid, labels, config.calibrate, config.seed, rate)
    base_rate, bins = spec.label_rate["train"], config.calibrate.bins
    result = {"model_id": model_id, "method": calibrator.method,
              "selected_by": "cross-fit" if config.calibrate.method == "auto" else "config",
              "negative_sampling_rate": rate,
              **metrics.summary(labels, calibrated, base_rate, bins),
              "in_sample_logloss": metrics.logloss(labels, calibrator.apply(valid)),
              "before": metrics.summary(labels, valid, base_rate, bins),
              "candidates": table}
    with stage.build() as out:
        (out / "calibrator.json").write_text(json.dumps(calibrator.to_json(), indent=1) + "\n")
        write_predictions(out, "valid", calibrated)
        write_predictions(out, "test", calibrator.apply(test))
        (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
        curves = {"before": valid, f"after ({calibrator.method})": calibrated}
        metrics.plot_reliability(labels, curves, out / "reliability.png",
                                title=f"{model_id}: validation", bins=bins)
        recorded = ("method", "valid_logloss", "valid_auc", "expected_calibration_error")
        stage.record(metrics={key: result[key] for key in recorded})
    before = result["before"]
    print(f"  {model_id}: {calibrator.method}, logloss {before['valid_logloss']:.5f} -> "
          f"{result['valid_logloss']:.5f}, ECE {before['expected_calibration_error']:.4f} -> "
          f"{result['expected_calibration_error']:.4f}")
    return result


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[],
                        help="calibrate only this model id (repeatable; default: `models`)")
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    model_ids = args.model or list(config.models)
    if not model_ids:
        raise SystemExit("06_calibrate: no models; set `models` in configs/pipeline.yaml")
    missing = [model_id for model_id in model_ids
               if not (stage_dir(args.tag, "05_train", model_id) / "manifest.json").exists()]
    if missing:
        raise SystemExit(f"06_calibrate: model(s) {', '.join(missing)} not trained in "
                         f"artifacts/{args.tag}/05_train/; run ./run.sh --only 05 --model ID "
                         f"or remove them from `models`")
    for model_id in model_ids:
        calibrate_model(args.tag, config, model_id, force=args.force)


if __name__ == "__main__":
    main()
