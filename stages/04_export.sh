#!/usr/bin/env bash
# Stage 04 export: libFFM text and the winners' GBDT inputs.
# Reads:  artifacts/<tag>/03_hash/
# Writes: artifacts/<tag>/04_export/{<split>.ffm, <split>.gbdt.npy, gbdt_columns.json}
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main preprocessing.export "$@"
