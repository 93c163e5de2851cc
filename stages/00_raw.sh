#!/usr/bin/env bash
# Stage 00 raw: find, unpack and check train/test (or generate the synthetic dataset).
# Reads:  --data DIR or data/raw/: train.txt + test.txt, their .gz, dac.tar.gz, or Kaggle CSVs;
#         or the Criteo 1TB logs day_0, day_1, ... (plain or .gz).
# Writes: artifacts/<tag>/00_raw/{train.txt, test.txt, raw.json} (+ truth files if synthetic),
#         or links to the day files and raw.json.
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main preprocessing.raw "$@"
