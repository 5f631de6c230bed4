#!/usr/bin/env bash
# Set up zoo in a fresh virtual environment, ./.venv, on Debian or Ubuntu.
#
#   bash setup.sh [EXTRA ...]     e.g. `bash setup.sh recipes` or `bash setup.sh test`
#
# Installs the Debian packages zoo needs (Python's venv module and the Fashion-MNIST IDX files),
# using sudo only when not already root, then `pip install ".[EXTRA,...]"` into .venv. The
# virtual environment keeps pip away from the system Python (PEP 668 refuses installs there).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "setup.sh: installing Debian packages needs root: run as root, or install sudo" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q python3 python3-venv dataset-fashion-mnist

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup.sh: zoo needs Python >= 3.11; this python3 is $(python3 --version)" >&2
    exit 1
}
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=$(IFS=,; echo "$*")
.venv/bin/python -m pip install -q ".${extras:+[$extras]}"
echo "setup.sh: installed into $(pwd)/.venv (activate with: . .venv/bin/activate)"
