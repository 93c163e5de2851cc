#!/usr/bin/env bash
# Stage 03 hash: winners' keys, md5 or xxh64 hashing, contiguous per-field ids.
# Reads:  artifacts/<tag>/00_raw/ (every split's files), 01_split/, 02_count/
# Writes: artifacts/<tag>/03_hash/{field_spec.json, <split>.{fields,labels,ids,ints}.npy, vocabulary.*}
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main preprocessing.hash_fields "$@"
