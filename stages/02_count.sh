#!/usr/bin/env bash
# Stage 02 count: value counts per field over the training split only (streaming, bounded memory).
# Reads:  artifacts/<tag>/00_raw/ (the train split's files), 01_split/split.json
# Writes: artifacts/<tag>/02_count/{counts.npz, fallback_text.json, count_summary.json}
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main preprocessing.count "$@"
