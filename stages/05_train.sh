#!/usr/bin/env bash
# Stage 05 train: every model id of the pipeline config's `models:` list (or --model ID), by the
# learner its configs/models/<id>.yaml names (`learner:` keras, libffm or gbdt; models/learner.py).
# Reads:  artifacts/<tag>/03_hash/ (or 04_export/, 04_leaves/ per model config), configs/models/<id>.yaml
# Writes: artifacts/<tag>/05_train/<id>/{metrics.json, valid.pred.npy, test.pred.npy, model file,
#         history.csv, learning_curve.png, config.resolved.*, manifest.json}
# Options: --preset auto|paper|demo (auto: demo on synthetic data), --resume, --model ID.
# Time: demo preset about a minute per model on 2 cores; paper preset on full Criteo: hours.
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main models.stage "$@"
