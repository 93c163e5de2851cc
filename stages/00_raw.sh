#!/usr/bin/env bash
# Stage 00 raw: find, unpack and check train/test (or generate the synthetic dataset).
# Reads:  --data DIR or data/raw/: train.txt + test.txt, their .gz, dac.tar.gz, or Kaggle CSVs.
# Writes: artifacts/<tag>/00_raw/{train.txt, test.txt, raw.json} (+ truth files if synthetic).
set -euo pipefail
exec "${PYTHON:-python}" -m preprocessing.raw "$@"
