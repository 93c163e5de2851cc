#!/usr/bin/env bash
# Stage 05 train: every model id of the pipeline config's `models:` list (or $MODELS, or --model),
# Keras models with `python -m models.train`, libffm* ids with `python -m models.libffm`.
# Reads:  artifacts/<tag>/03_hash/ (field files), configs/models/<id>.yaml
# Writes: artifacts/<tag>/05_train/<id>/{metrics.json, valid.pred.npy, test.pred.npy, model.keras,
#         history.csv, learning_curve.png, tensorboard/, config.resolved.{json,yaml}, manifest.json}
#         (checkpoints in 05_train/.checkpoints/<id>/ while training)
# Options: --tag, --force, --model ID, --config/--set (pipeline overlays, for `models:`),
#          --preset auto|paper|demo (auto: demo on synthetic data), --resume.
# Time: demo preset ~1 min per model on 2 cores; paper preset on full Criteo: hours per model.
set -euo pipefail
PYTHON="${PYTHON:-python}"
TAG=demo MODEL="" PRESET="${PRESET:-auto}" TRAIN_FLAGS=() PIPELINE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --force|--resume) TRAIN_FLAGS+=("$1"); shift ;;
    --config|--set) PIPELINE+=("$1" "$2"); shift 2 ;;
    *) echo "05_train.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
if [[ -n "$MODEL" ]]; then
  MODELS="$MODEL"
elif [[ -z "${MODELS:-}" ]]; then
  MODELS="$("$PYTHON" -c 'import sys; from stages.settings import load_pipeline_config
pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))  # (--config, FILE) / (--set, KEY=VALUE)
config = load_pipeline_config([v for k, v in pairs if k == "--config"],
                              [v for k, v in pairs if k == "--set"])
print(" ".join(config.models))' "${PIPELINE[@]}")"
fi
if [[ "$PRESET" == auto ]]; then  # demo on the synthetic dataset, paper on real data
  PRESET="$("$PYTHON" -c 'import sys; from preprocessing.field_spec import FieldSpec
from stages.paths import stage_dir
spec = FieldSpec.load(stage_dir(sys.argv[1], "03_hash"))
print("demo" if spec.extra.get("source") == "synthetic" else "paper")' "$TAG")"
fi
for model_id in $MODELS; do
  if [[ "$model_id" == libffm* ]]; then
    FLAGS=(); [[ " ${TRAIN_FLAGS[*]} " == *" --force "* ]] && FLAGS=(--force)
    "$PYTHON" -m models.libffm --tag "$TAG" --model "$model_id" --preset "$PRESET" "${FLAGS[@]}"
  else
    "$PYTHON" -m models.train --tag "$TAG" --model "$model_id" --preset "$PRESET" \
      "${TRAIN_FLAGS[@]}"
  fi
done
