#!/usr/bin/env bash
# Stage 01 split: time-ordered validation split (last split.valid_fraction of train rows).
# Reads:  artifacts/<tag>/00_raw/raw.json
# Writes: artifacts/<tag>/01_split/split.json (row ranges of train / valid / test)
set -euo pipefail
exec "${PYTHON:-python}" -m preprocessing.split "$@"
