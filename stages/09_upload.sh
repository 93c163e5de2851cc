#!/usr/bin/env bash
# Stage 09 upload (opt-in): submits stage 08's file to Kaggle with the kaggle CLI, once, only with
# --set submit.upload=true; otherwise it prints how to enable it and does nothing.
# Reads:  artifacts/<tag>/08_submit/submission.json, ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KEY
# Writes: artifacts/<tag>/09_upload/upload.json
# No test rows (the Criteo 1TB input): says there is nothing to submit and does nothing.
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main submissions.upload "$@"
