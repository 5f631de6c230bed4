#!/usr/bin/env bash
# The benchmark on a GPU machine, in one command, under 5 minutes: every contender on every
# workload (steps/s), zoo's K steps per dispatch against its one-call-per-step loop, and
# the time to the first step; the tables go to benchmarks/results/gpu/ (and to $OUT when
# set, which is what comes back from a device run).
#
#   benchmarks/gpu.sh --prepare     # here, with network: wheels and data into .whl/
#   benchmarks/gpu.sh               # there: install from .whl/, run, write the tables
#   benchmarks/gpu.sh --tiny        # the smallest end-to-end run (the CPU test's)
#
# The GPU image has JAX with CUDA, equinox, optax, flax and torch, but not grain, beartype
# or jaxtyping: they travel as wheels in .whl/ (git-ignored), with Fashion-MNIST in
# .whl/datasets/ (the machine has no network), and install with `--no-index`. The run
# itself is `python -m benchmarks.run --plan gpu`; on a machine without a GPU it runs the
# same on the CPU (JAX_PLATFORMS=cpu), which is how it is tested.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHL=.whl
OUT_DIR=${GPU_OUT_DIR:-benchmarks/results/gpu}
plan=gpu
case "${1:-}" in
  --prepare)
    mkdir -p "$WHL/datasets/fashion-mnist"
    "$PY" -m pip download -q grain beartype jaxtyping -d "$WHL"
    # The image's Python may differ from this one: binary wheels for the others as well.
    for v in 3.10 3.11 3.12 3.13; do
      "$PY" -m pip download -q --only-binary=:all: --python-version "$v" \
        grain beartype jaxtyping -d "$WHL"
    done
    # The image has these (JAX needs them); leaving them out keeps the carried tree small.
    rm -f "$WHL"/numpy-*.whl "$WHL"/jax-*.whl "$WHL"/jaxlib-*.whl
    cp /usr/share/datasets/fashion-mnist/train-*-ubyte.gz "$WHL/datasets/fashion-mnist/"
    du -sh "$WHL"
    exit 0
    ;;
  --tiny) plan=tiny ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --tiny]" >&2; exit 2 ;;
esac

# What is missing, from the wheels (no network there); nothing to do where all is installed.
if ! "$PY" -c "import grain, beartype, jaxtyping" 2>/dev/null; then
  if [ ! -d "$WHL" ]; then
    echo "grain/beartype/jaxtyping missing and no $WHL/: run '$0 --prepare' first" >&2
    exit 1
  fi
  "$PY" -m pip install -q --no-index --find-links "$WHL" grain beartype jaxtyping
fi
if [ -d "$WHL/datasets/fashion-mnist" ]; then
  export ZOO_DATA="$PWD/$WHL/datasets"
fi
# zoo and the recipes from this checkout, not installed: nothing to build there.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
if [ "$plan" = tiny ]; then
  # Two contenders of one workload: the K-step dispatch and the one-call-per-step loop.
  "$PY" -m benchmarks.run --plan tiny --workloads mlp --contenders zoo,zoo_jit --out "$OUT_DIR"
else
  "$PY" -m benchmarks.run --plan gpu --out "$OUT_DIR"
fi
if [ -n "${OUT:-}" ]; then
  cp "$OUT_DIR"/results.md "$OUT_DIR"/results.json "$OUT"/
fi
echo "wrote $OUT_DIR/results.md"
