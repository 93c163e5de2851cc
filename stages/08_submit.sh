#!/usr/bin/env bash
# Stage 08 submit: the Kaggle CSV (Id,Predicted) of submit.source, validated before it is named.
# Reads:  artifacts/<tag>/07_ensemble/<name>/ (or 06_calibrate/<id>, 05_train/<id>); 03_hash/
# Writes: submissions/csv/<stamp>_<tag>_<id>.csv.gz, a row in submissions/LOG.md,
#         artifacts/<tag>/08_submit/submission.json (./run.sh then refreshes REPORT.md)
# No test rows (the Criteo 1TB input): says there is nothing to submit and writes nothing.
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main submissions.write "$@"
