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
                  for day files, else kaggle). A tag remembers the --data, --config and --set
                  it was run with (artifacts/NAME/tag.json): later commands on it need none of
                  them again; a different --data on it is refused unless --force
  --only NN[,NN]  run only these stages (e.g. --only 03 or --only 02,03)
  --from NN       run stage NN and every later one
  --force         rebuild the selected stages even if up to date
  --list          print every stage's status (done / stale / missing) and why, run nothing
  --model ID      stage 05: train only this model id (configs/models/ID.yaml)
  --rows N        synthetic data: N train rows (test rows in the Kaggle proportion)
  --config FILE   YAML overlay on configs/pipeline.yaml (repeatable)
  --set KEY=VAL   override one config key, e.g. --set hash.mode=md5 (repeatable)
  --verbose       keep TensorFlow's start-up log lines (dropped by default)
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

for arg in "$@"; do
  [[ "$arg" == "-h" || "$arg" == "--help" ]] && { show_help; exit 0; }
done
ensure_venv
exec "$PYTHON" -m stages.run "$@"
