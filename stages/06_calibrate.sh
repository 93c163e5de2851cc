#!/usr/bin/env bash
# Stage 06 calibrate: per model, a calibration chosen by cross-fitted validation logloss
# (none, winners' fixed shift, logit shift, Platt, isotonic; down-sampling undone first).
# Reads:  artifacts/<tag>/05_train/<id>/{valid,test}.pred.npy, metrics.json; 03_hash/ (labels)
# Writes: artifacts/<tag>/06_calibrate/<id>/{calibrator.json, valid.pred.npy, test.pred.npy,
#         metrics.json, reliability.png} for every id in `models` (config keys: calibrate.*)
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main ensembles.calibrate "$@"
