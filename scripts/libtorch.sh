#!/usr/bin/env bash
# Prints the libtorch directory gptdash builds against.
#
# - If LIBTORCH is set, it wins and is printed as is.
# - Otherwise PyTorch $TORCH_VERSION from PyPI is installed, once, into a virtualenv in
#   the per-user cache (${XDG_CACHE_HOME:-~/.cache}/gptdash/torch-$TORCH_VERSION), which
#   every clone of gptdash reuses. The wheel is large: the first install takes minutes.
set -euo pipefail

TORCH_VERSION=2.11.0 # the version tch 0.24 is built for

if [ -n "${LIBTORCH:-}" ]; then
  if [ ! -d "$LIBTORCH/lib" ]; then
    echo "error: LIBTORCH=$LIBTORCH has no lib/ folder; point it at a libtorch $TORCH_VERSION directory or unset it" >&2
    exit 1
  fi
  echo "$LIBTORCH"
  exit 0
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/gptdash"
venv="$cache/torch-$TORCH_VERSION"
marker="$venv/.gptdash-libtorch"

installed() { [ -f "$marker" ] && [ -f "$(cat "$marker")/lib/libtorch_cpu.so" ]; }

if installed; then cat "$marker"; exit 0; fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 is needed once to fetch libtorch $TORCH_VERSION from PyPI." >&2
  echo "       Install it (Debian/Ubuntu: sudo apt install python3 python3-venv)," >&2
  echo "       or set LIBTORCH to an unpacked libtorch $TORCH_VERSION directory." >&2
  exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/.install.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi # another clone may be installing
if installed; then cat "$marker"; exit 0; fi

echo "gptdash: installing PyTorch $TORCH_VERSION into $venv (first time only; a large download, several minutes)" >&2
if [ ! -x "$venv/bin/pip" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    echo "error: could not create a virtualenv at $venv." >&2
    echo "       Debian/Ubuntu: sudo apt install python3-venv, then run make again." >&2
    exit 1
  fi
fi
if ! "$venv/bin/pip" install --disable-pip-version-check --no-input "torch==$TORCH_VERSION" >&2; then
  echo "error: 'pip install torch==$TORCH_VERSION' failed (see above)." >&2
  echo "       Check your network/PyPI access and free disk space (~6 GB), then run make again;" >&2
  echo "       or set LIBTORCH to an unpacked libtorch $TORCH_VERSION directory." >&2
  exit 1
fi
dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
if [ ! -f "$dir/lib/libtorch_cpu.so" ]; then
  echo "error: the installed torch at $dir has no lib/libtorch_cpu.so" >&2
  exit 1
fi
echo "$dir" >"$marker"
echo "$dir"
