#!/usr/bin/env bash
# GPU throughput of IPNN, KPNN-vec, PIN and FFM with KERAS_BACKEND=jax (bench/gpu.py), on a
# machine that has JAX and numpy but maybe neither Keras nor TensorFlow, and no network.
#
#   bench/gpu.sh fetch           where pip reaches PyPI: Keras and the two dependencies such a
#                                machine lacks (namex, optree) as wheels in .whl/ (~3 MB,
#                                git-ignored; for CPython $WHEEL_PYTHON, default 3.12)
#   bench/gpu.sh [gpu.py args]   on the GPU machine, with .whl/ copied along: if `import keras`
#                                fails, unpacks the wheels into $SITE (no pip needed: a wheel is
#                                a zip of importable folders), then runs bench/gpu.py
#   bench/gpu.sh --scale 0.01 --batch-sizes 64 --steps 2 --set model.hidden_units=[16]
#                                the CPU path (tests/test_bench_gpu.py)
# Environment: PYTHON (default python3), WHEELS (default .whl), SITE (default /tmp/criteo-pnn-site).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/criteo-pnn-site}
export KERAS_BACKEND=jax  # before `import keras`: its default backend is TensorFlow

if [[ ${1:-} == fetch ]]; then
  version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "keras==$(version keras)" \
    "namex==$(version namex)" "optree==$(version optree)"
  exit
fi

if ! "$PYTHON" -c "import keras" 2>/dev/null; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  if (( ${#wheels[@]} == 0 )); then
    echo "bench/gpu.sh: keras is not importable and $WHEELS/ has no wheels;" \
         "run 'bench/gpu.sh fetch' where pip reaches PyPI and copy $WHEELS/ along" >&2
    exit 1
  fi
  mkdir -p "$SITE"
  for wheel in "${wheels[@]}"; do "$PYTHON" -m zipfile -e "$wheel" "$SITE"; done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" bench/gpu.py "$@"
