#!/usr/bin/env bash
# Stage 07 ensemble: logit-space blends, non-negative weights fitted on validation and kept only
# if they beat the plain average on both held-out halves (config keys: ensemble.*).
# Reads:  artifacts/<tag>/06_calibrate/<id>/ (or 05_train/<id>/) for each member; 03_hash/
# Writes: artifacts/<tag>/07_ensemble/<name>/{weights.json, valid.pred.npy, test.pred.npy,
#         metrics.json, reliability.png}
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main ensembles.blend "$@"
