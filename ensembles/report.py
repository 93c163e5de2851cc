"""The results report: `python -m ensembles.report --tag T [--readme]`.

Reads the `metrics.json` files of stages 05-07 and the stage 08 record under `artifacts/<T>/`,
and says what the numbers were made from (00_raw/raw.json, 03_hash/field_spec.json, the models'
presets). Writes `artifacts/<T>/REPORT.md`: one row per trained model (validation logloss, AUC,
relative information gain, examples/s, parameters, wall time, the calibration chosen and its
effect, links to the learning curve and reliability diagram), one row per tuned model (stage 05's
search, `models/tune.py`: the default and the best trial on the tuning slice, the default and the
tuned model on validation, the best setting, the trial plot), one row per blend (the candidate
chosen, each member's weight, the held-out logloss of each blend candidate) and the submission
written.
With `--readme` the same tables replace the text between the markers
`<!-- results:begin -->` and `<!-- results:end -->` in README.md, with links rooted at the repo.
Stage 08 refreshes REPORT.md after every run; README.md changes only on request.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from pathlib import Path

from ensembles import metrics
from preprocessing import schema
from pipeline.paths import REPO_ROOT, artifacts_root, stage_dir

REPORT_FILE = "REPORT.md"
BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"
MODEL_HEADER = ("| model | valid logloss | AUC | RIG | examples/s | parameters | wall s | "
                "calibration | calibrated logloss | ECE before → after | plots |")
BLEND_HEADER = ("| ensemble | method (source) | weights | valid logloss | AUC | RIG | "
                "plain average | best member | held-out: weighted / average / single / select | "
                "plots |")
TUNE_HEADER = ("| tuned model | trials: complete / pruned / failed (budget) | tuning slice: "
               "default → best | validation: default → tuned | best trial's setting | plot |")
# The blend candidates in the held-out column; "select" is left out of blends written before it
# existed (and of `weighted` blends, which do not fit it).
BLEND_CANDIDATES = ("weighted", "average", "single")


def plot_reliability(labels, curves: dict, path: Path, title: str, bins: int = 20) -> None:
    """Reliability diagram (PNG): click rate against mean prediction in equal-count bins, one
    line per entry of `curves` ({name: probabilities [N]}), log-log so low CTRs are readable."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5, 5), dpi=100)
    low, high = 1.0, 0.0
    for name, probabilities in curves.items():
        mean_prediction, click_rate, _ = metrics.reliability_bins(labels, probabilities, bins)
        ece = metrics.expected_calibration_error(labels, probabilities, bins)
        axes.plot(mean_prediction, click_rate, marker="o", markersize=3,
                  label=f"{name} (ECE {ece:.4f})")
        low, high = min(low, mean_prediction.min()), max(high, mean_prediction.max())
    low, high = max(low / 1.5, 1e-6), min(high * 1.5, 1.0)
    axes.plot([low, high], [low, high], color="grey", linestyle="--", label="perfect calibration")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"mean prediction ({bins} equal-count bins)")
    axes.set_ylabel("click rate")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def number(value, digits: int) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def count(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def link(text: str, path: Path, tag_dir: Path, prefix: str) -> str:
    return f"[{text}]({prefix}{path.relative_to(tag_dir).as_posix()})" if path.exists() else ""


def data_description(tag: str) -> str:
    """What the tag's numbers were made from: the raw input, the split and the model presets."""
    raw = read_json(stage_dir(tag, "00_raw") / "raw.json") or {}
    spec = read_json(stage_dir(tag, "03_hash") / "field_spec.json") or {}
    parts = []
    if raw.get("source") == "synthetic":
        parts.append("synthetic Criteo-like data (`preprocessing/synthetic/`)")
    elif raw.get("source") == schema.CRITEO_1TB:
        parts.append(f"the Criteo 1TB logs, {len(raw['days'])} days ({raw['days'][0]} .. "
                     f"{raw['days'][-1]}; the last is the validation day, no test set)")
    elif raw:
        files = ", ".join(f"`{Path(path).name}` ({raw['rows'][split]:,} rows)"
                          for split, path in raw["inputs"].items())
        extent = "the full Kaggle files" if raw.get("full_size") else "a sample, not the full " \
            "Kaggle files"
        parts.append(f"real Criteo rows: {files}, {extent}")
    if spec:
        rows = spec["rows"]
        parts.append(f"time-ordered split train {rows['train']:,} / valid {rows['valid']:,} / "
                     f"test {rows['test']:,} rows, {spec['total_vocabulary_size']:,} feature ids "
                     f"(min count {spec['min_count']['cat']})")
    presets = {}
    trained = stage_dir(tag, "05_train")
    for path in sorted(trained.glob("*/config.resolved.json")) if trained.is_dir() else []:
        preset = json.loads(path.read_text()).get("preset", "?")
        presets.setdefault(preset, []).append(path.parent.name)
    if presets:
        parts.append("model presets: " + "; ".join(
            preset if len(presets) == 1 else f"{preset} ({', '.join(ids)})"
            for preset, ids in sorted(presets.items())))
    return "Data: " + "; ".join(parts) + "." if parts else "Data: unknown (no 00_raw/03_hash)."


def model_rows(tag: str, prefix: str) -> list[str]:
    tag_dir = artifacts_root() / tag
    trained = stage_dir(tag, "05_train")
    found = []
    for folder in sorted(trained.iterdir()) if trained.is_dir() else []:
        model_metrics = read_json(folder / "metrics.json")
        if model_metrics and not folder.name.startswith("."):
            found.append((folder.name, model_metrics))
    found.sort(key=lambda item: item[1].get("valid_logloss", float("inf")))
    rows = []
    for model_id, model_metrics in found:
        calibrated = read_json(stage_dir(tag, "06_calibrate", model_id) / "metrics.json") or {}
        before = calibrated.get("before", {})
        plots = [link("learning curve", trained / model_id / "learning_curve.png", tag_dir, prefix),
                 link("reliability", stage_dir(tag, "06_calibrate", model_id) / "reliability.png",
                      tag_dir, prefix)]
        ece = "–"
        if calibrated:
            ece = (f"{number(before.get('expected_calibration_error'), 4)} → "
                   f"{number(calibrated.get('expected_calibration_error'), 4)}")
        manifest = read_json(trained / model_id / "manifest.json") or {}
        fingerprint = tuned_fingerprint(tag, model_id)
        tuned = fingerprint is not None and manifest.get("fingerprint") == fingerprint
        rows.append("| " + " | ".join([
            model_id + (" (tuned)" if tuned else ""),
            number(model_metrics.get("valid_logloss"), 5),
            number(model_metrics.get("valid_auc"), 4),
            number(model_metrics.get("relative_information_gain"), 4),
            count(model_metrics.get("examples_per_second")),
            count(model_metrics.get("parameter_count")),
            number(model_metrics.get("wall_seconds"), 1),
            calibrated.get("method", "–"), number(calibrated.get("valid_logloss"), 5), ece,
            " ".join(plot for plot in plots if plot)]) + " |")
    return rows


def tuned_fingerprint(tag: str, model_id: str) -> str | None:
    """The fingerprint 05_train/<id> has when it holds the tuned model (05_tune's best.json)."""
    best = read_json(stage_dir(tag, "05_tune", model_id) / "best.json")
    return best.get("tuned_fingerprint") if best else None


def tune_rows(tag: str, prefix: str) -> list[str]:
    """One row per study of 05_tune: the untuned config (its first trial) beside the best trial
    on the tuning slice (the training split's tail), and beside the tuned model on validation."""
    tag_dir = artifacts_root() / tag
    folder = stage_dir(tag, "05_tune")
    rows = []
    for study_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        best = read_json(study_dir / "best.json")
        if not best or study_dir.name.startswith("."):
            continue
        trained = stage_dir(tag, "05_train", study_dir.name)
        manifest = read_json(trained / "manifest.json") or {}
        tuned = "not trained"
        if manifest.get("fingerprint") == best["tuned_fingerprint"]:
            tuned = number((read_json(trained / "metrics.json") or {}).get("valid_logloss"), 5)
        default = best["default"]
        default_valid = "not run" if default["valid_logloss"] is None else \
            number(default["valid_logloss"], 5)
        counts = best["trials"]
        setting = ", ".join(f"{key.split('.')[-1]} {_setting(value)}"
                            for key, value in best["values"].items())
        rows.append("| " + " | ".join([
            study_dir.name,
            f"{counts['complete']} / {counts['pruned']} / {counts['failed']} "
            f"({counts['budget']}, ended by {best['ended_by']})",
            f"{number(default['tuning_logloss'], 5)} → {number(best['tuning_logloss'], 5)} "
            f"(trial {best['best_trial']})",
            f"{default_valid} → {tuned}",
            setting, link("trials", study_dir / "trials.png", tag_dir, prefix)]) + " |")
    return rows


def _setting(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and value and len(set(value)) == 1:
        return f"{value[0]} x {len(value)}"
    return str(value)


def blend_rows(tag: str, prefix: str) -> list[str]:
    tag_dir = artifacts_root() / tag
    folder = stage_dir(tag, "07_ensemble")
    rows = []
    for blend_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        result = read_json(blend_dir / "metrics.json")
        if not result or blend_dir.name.startswith("."):
            continue
        # Every member's weight, the largest first (ties in member order), then a nonzero bias.
        weights = ", ".join(f"{member} {weight:.2f}" for member, weight in
                            sorted(result["weights"].items(), key=lambda item: -item[1]))
        if result.get("bias"):
            weights += f", bias {result['bias']:+.2f}"
        best = min(result["member_metrics"].items(), key=lambda item: item[1]["valid_logloss"])
        method = result["method"]
        if result.get("single_member"):
            method += f" {result['single_member']}"
        held_out = result.get("held_out_logloss") or {}
        rows.append("| " + " | ".join([
            result["name"], f"{method} ({result['source']})", weights,
            number(result["valid_logloss"], 5), number(result["valid_auc"], 4),
            number(result["relative_information_gain"], 4),
            number(result["average"]["valid_logloss"], 5),
            f"{best[0]} {best[1]['valid_logloss']:.5f}",
            " / ".join(number(held_out.get(key), 5) for key in
                       BLEND_CANDIDATES + (("select",) if "select" in held_out else ())),
            link("reliability", blend_dir / "reliability.png", tag_dir, prefix)]) + " |")
    return rows


def render(tag: str, prefix: str = "") -> str:
    """The Markdown tables; links are `prefix` + path relative to artifacts/<tag>/."""
    intro = (f"Artifact tree `{tag}`, generated {datetime.date.today().isoformat()} by "
             f"`python -m ensembles.report --tag {tag}`. Validation logloss and AUC on the "
             "time-ordered validation split; RIG = relative information gain over predicting the "
             "training click rate. Calibrated and blended logloss are cross-fitted on two halves "
             "of the validation split (honest, see `ensembles/calibrate.py`). Plots link into "
             f"the git-ignored `artifacts/{tag}/` tree, present after a run.")
    lines = [intro, "", data_description(tag), "",
             MODEL_HEADER, "|---" * MODEL_HEADER.count(" | ") + "|---|"]
    lines += model_rows(tag, prefix) or ["| (no trained models in 05_train) |" + " |" * 10]
    tuned = tune_rows(tag, prefix)
    if tuned:
        lines += ["", "Tuned models (`./run.sh --only 05 --tune ID`): trials train on the training "
                  "split less its last part and are scored on that part (the tuning slice); the "
                  "validation split never served the search. The default is the untuned config "
                  "(the study's first trial; on validation, the model published before tuning).",
                  "", TUNE_HEADER, "|---" * TUNE_HEADER.count(" | ") + "|---|", *tuned]
    blends = blend_rows(tag, prefix)
    if blends:
        lines += ["", BLEND_HEADER, "|---" * BLEND_HEADER.count(" | ") + "|---|"]
        lines += blends
    submission = read_json(stage_dir(tag, "08_submit") / "submission.json")
    if submission:
        lines += ["", (f"Submission: `{submission['file']}` from `{submission['source']}`, "
                       f"{submission['rows']:,} rows, validated; validation logloss "
                       f"{number(submission.get('valid_logloss'), 5)}.")]
    return "\n".join(lines) + "\n"


def write_report(tag: str) -> Path:
    path = artifacts_root() / tag / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Results: {tag}\n\n" + render(tag))
    return path


def update_readme(tag: str, readme: Path = REPO_ROOT / "README.md") -> None:
    """Replaces the text between the results markers in `readme` with the tables."""
    text = readme.read_text()
    if text.count(BEGIN_MARKER) != 1 or text.count(END_MARKER) != 1 or \
            text.index(BEGIN_MARKER) > text.index(END_MARKER):
        raise ValueError(f"{readme}: needs one {BEGIN_MARKER} line followed by one {END_MARKER}")
    tag_dir = artifacts_root() / tag
    prefix = os.path.relpath(tag_dir, readme.parent).replace(os.sep, "/") + "/"
    head, rest = text.split(BEGIN_MARKER)
    _, tail = rest.split(END_MARKER)
    readme.write_text(f"{head}{BEGIN_MARKER}\n{render(tag, prefix)}{END_MARKER}{tail}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="demo", help="artifact tree: artifacts/<tag>/")
    parser.add_argument("--readme", action="store_true",
                        help="also replace the tables between the markers in README.md")
    args = parser.parse_args(argv)
    print(f"wrote {write_report(args.tag)}")
    if args.readme:
        try:
            update_readme(args.tag)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        print(f"updated {REPO_ROOT / 'README.md'}")


if __name__ == "__main__":
    main()
