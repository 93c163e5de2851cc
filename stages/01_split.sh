#!/usr/bin/env bash
# Stage 01 split: time-ordered validation split (last split.valid_fraction of train rows, or
# the last day of the 1TB logs).
# Reads:  artifacts/<tag>/00_raw/raw.json
# Writes: artifacts/<tag>/01_split/split.json (train / valid / test as lists of file parts)
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main preprocessing.split "$@"
