#!/usr/bin/env bash
# Stage 04 leaves: the winners' GBDT (30 trees, depth 7) leaf features as 30 extra fields.
# Reads:  artifacts/<tag>/03_hash/, artifacts/<tag>/04_export/<split>.gbdt.npy
# Writes: artifacts/<tag>/04_leaves/{field_spec.json, <split>.fields.npy (39 + 30 fields),
#         <split>.leaves.npy, <split>.{labels,ids,ints}.npy, gbdt*.json, leaves.json}
set -euo pipefail
exec "${PYTHON:-python}" -m pipeline.main preprocessing.leaves "$@"
