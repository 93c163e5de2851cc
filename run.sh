#!/usr/bin/env bash
# criteo-pnn: the numbered stages from raw Criteo files to a submission. See README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"
VENV="$REPO/.venv"

show_help() {
  cat <<'EOF'
Usage: ./run.sh [options]          run the stages, skipping those already done
       ./run.sh test [pytest args] run the test suite (creates .venv if missing)
       ./run.sh requirements       which requirements file a new .venv would be built from:
                                   requirements-gpu.txt when nvidia-smi sees an NVIDIA GPU
                                   (override: CRITEO_PNN_GPU=1 or 0), else requirements.txt
       ./run.sh predict --tag NAME --input FILE [--output FILE] [--model ID|--blend NAME]
                                   score raw rows (TSV, .gz or Kaggle CSV) into Id,Predicted
                                   (default: the blend the tag's submission used)
       ./run.sh export --tag NAME --out DIR [--model ID|--blend NAME]
                                   a self-contained bundle folder for `predict --bundle DIR`
                                   and criteo_pnn.load(DIR); `predict --help` for the rest

Options:
  --data DIR      raw input folder (train.txt + test.txt, .gz, dac.tar.gz or Kaggle CSVs, or
                  the Criteo 1TB logs day_0 .. day_23, with --config configs/criteo1tb.yaml);
                  default data/raw/ if it holds them, else the synthetic demo data
  --tag NAME      artifact tree artifacts/NAME/ (default: demo for synthetic data, criteo1tb
                  for day files, else kaggle). A tag remembers the --data, --config and --set
                  it was run with (artifacts/NAME/tag.json): later commands on it need none of
                  them again; a different --data on it is refused unless --force
  --artifacts DIR artifacts root holding NAME/ (default: $CRITEO_PNN_ARTIFACTS if set, else
                  artifacts/ in the repository); every stage gets it as its --artifacts
  --only NN[,NN]  run only these stages (e.g. --only 03 or --only 02,03)
  --from NN       run stage NN and every later one
  --force         rebuild the selected stages even if up to date
  --list          print every stage's status (done / stale / missing) and why, run nothing
  --model ID      stage 05: train only this model id (configs/models/ID.yaml)
  --tune ID[,ID]  stage 05: search these models' hyperparameters first (Optuna, search spaces in
                  configs/models/search/ID.yaml; budget --set tune.trials=N tune.minutes=M),
                  then train them with the best setting; remembered by the tag
  --rows N        synthetic data: N train rows (test rows in the Kaggle proportion)
  --config FILE   YAML overlay on configs/pipeline.yaml (repeatable)
  --set KEY=VAL   override one config key, e.g. --set hash.mode=md5 (repeatable)
  --verbose       keep TensorFlow's start-up log lines (dropped by default)
  -h, --help      this help
EOF
}

# Which requirements file builds .venv: requirements-gpu.txt (tensorflow[and-cuda]) when an
# NVIDIA GPU answers nvidia-smi, else requirements.txt (tensorflow-cpu). CRITEO_PNN_GPU=1 or 0
# overrides the detection. Prints "FILE: reason".
choose_requirements() {
  case "${CRITEO_PNN_GPU:-auto}" in
    1|yes|true) echo "requirements-gpu.txt: CRITEO_PNN_GPU=${CRITEO_PNN_GPU}"; return ;;
    0|no|false) echo "requirements.txt: CRITEO_PNN_GPU=${CRITEO_PNN_GPU}"; return ;;
  esac
  local gpus
  if command -v nvidia-smi >/dev/null 2>&1 \
      && gpus="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)" \
      && [[ -n "$gpus" ]]; then
    echo "requirements-gpu.txt: nvidia-smi sees $(echo "$gpus" | head -1)$( (( $(echo "$gpus" | wc -l) > 1 )) && echo " and $(( $(echo "$gpus" | wc -l) - 1 )) more")"
  else
    echo "requirements.txt: no NVIDIA GPU answered nvidia-smi (CRITEO_PNN_GPU=1 forces the GPU build)"
  fi
}

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    local choice requirements
    choice="$(choose_requirements)"
    requirements="${choice%%:*}"
    echo "creating $VENV from $choice" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r "$requirements"
    echo "$requirements" > "$VENV/criteo-pnn-requirements"
    "$VENV/bin/python" -c 'import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
print("TensorFlow", tf.__version__, "sees:", ", ".join(d.device_type + ":" + d.name.split(":")[-1] for d in tf.config.list_physical_devices()))' 2>/dev/null >&2 || true
  elif [[ -f "$VENV/criteo-pnn-requirements" ]]; then
    local built wanted
    built="$(cat "$VENV/criteo-pnn-requirements")"
    wanted="$(choose_requirements)"
    [[ "$built" == "${wanted%%:*}" ]] || echo "note: $VENV was built from $built; now" \
      "${wanted%%:*} would be chosen (${wanted#*: }): remove $VENV to rebuild it" >&2
  fi
  export PYTHON="$VENV/bin/python"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
}

if [[ "${1:-}" == "requirements" ]]; then  # which requirements file a new .venv would use
  choose_requirements
  exit 0
fi

if [[ "${1:-}" == "test" ]]; then
  shift
  ensure_venv
  exec "$PYTHON" -m pytest "$@"
fi

if [[ "${1:-}" == "predict" || "${1:-}" == "export" ]]; then  # criteo_pnn/cli.py
  ensure_venv
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
  exec "$PYTHON" -m criteo_pnn.cli "$@"
fi

for arg in "$@"; do
  [[ "$arg" == "-h" || "$arg" == "--help" ]] && { show_help; exit 0; }
done
ensure_venv
exec "$PYTHON" -m pipeline.run "$@"
