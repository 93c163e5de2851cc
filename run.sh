#!/usr/bin/env bash
# criteo-pnn: the numbered stages from raw Criteo files to a submission. See README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"
VENV="$REPO/.venv"

show_help() {
  cat <<'EOF'
Usage: ./run.sh [options]          run the stages, skipping those already done
       ./run.sh test [pytest args] run the test suite (creates .venv from requirements.txt)

Options:
  --data DIR      raw input folder (train.txt + test.txt, .gz, dac.tar.gz or Kaggle CSVs, or
                  the Criteo 1TB logs day_0 .. day_23, with --config configs/criteo1tb.yaml);
                  default data/raw/ if it holds them, else the synthetic demo data
  --tag NAME      artifact tree artifacts/NAME/ (default: demo for synthetic data, criteo1tb
                  for day files, else kaggle)
  --only NN[,NN]  run only these stages (e.g. --only 03 or --only 02,03)
  --from NN       run stage NN and every later one
  --force         rebuild the selected stages even if up to date
  --list          print every stage's status (done / stale / missing) and why, run nothing
  --model ID      stage 05: train only this model id (configs/models/ID.yaml)
  --rows N        synthetic data: N train rows (test rows in the Kaggle proportion)
  --config FILE   YAML overlay on configs/pipeline.yaml (repeatable)
  --set KEY=VAL   override one config key, e.g. --set hash.mode=md5 (repeatable)
  -h, --help      this help
EOF
}

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating $VENV from requirements.txt" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r requirements.txt
  fi
  export PYTHON="$VENV/bin/python"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
}

if [[ "${1:-}" == "test" ]]; then
  shift
  ensure_venv
  exec "$PYTHON" -m pytest "$@"
fi

TAG="" ONLY="" FROM="" FORCE=() LIST=0 MODEL="" DATA="" COMMON=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --from) FROM="$2"; shift 2 ;;
    --force) FORCE=(--force); shift ;;
    --list) LIST=1; shift ;;
    --model) MODEL="$2"; shift 2 ;;
    --rows) COMMON+=(--set "synthetic.train_rows=$2"
                     --set "synthetic.test_rows=$(( $2 * 6042135 / 45840617 + 1 ))"); shift 2 ;;
    --config) COMMON+=(--config "$2"); shift 2 ;;
    --set) COMMON+=(--set "$2"); shift 2 ;;
    -h|--help) show_help; exit 0 ;;
    *) echo "unknown option: $1" >&2; show_help >&2; exit 1 ;;
  esac
done

has_raw_data() {
  local dir="${DATA:-data/raw}"
  compgen -G "$dir/train.*" >/dev/null || [[ -f "$dir/dac.tar.gz" ]] || has_day_files
}

has_day_files() {  # the Criteo 1TB logs: day_0, day_1, ... (plain, .gz, .txt or .txt.gz)
  compgen -G "${DATA:-data/raw}/day_[0-9]*" >/dev/null
}

if [[ -n "$DATA" ]]; then
  [[ -d "$DATA" ]] || { echo "--data $DATA: no such folder" >&2; exit 1; }
  COMMON+=(--set "raw.data_dir=$(cd "$DATA" && pwd)")
fi
if [[ -z "$TAG" ]]; then
  if has_day_files; then TAG=criteo1tb; elif has_raw_data; then TAG=kaggle; else TAG=demo; fi
fi
COMMON=(--tag "$TAG" "${COMMON[@]}")

ensure_venv
if [[ $LIST == 1 ]]; then
  exec "$PYTHON" -m stages.status "${COMMON[@]}"
fi

selected() {  # is stage number $1 selected by --only / --from?
  local number="$1"
  if [[ -n "$ONLY" ]]; then [[ ",$ONLY," == *",$number,"* ]]; return; fi
  if [[ -n "$FROM" ]]; then (( 10#$number >= 10#$FROM )); return; fi
  return 0
}

for script in stages/[0-9][0-9]_*.sh; do
  name="$(basename "$script" .sh)"
  number="${name%%_*}"
  selected "$number" || continue
  extra=()
  [[ -n "$MODEL" && "$number" == "05" ]] && extra=(--model "$MODEL")
  echo "== stage $name" >&2
  bash "$script" "${COMMON[@]}" "${FORCE[@]}" "${extra[@]}"
done
echo "outputs: ${CRITEO_PNN_ARTIFACTS:-artifacts}/$TAG/ (./run.sh --tag $TAG --list for the status of every stage)" >&2
