#!/usr/bin/env bash
# gptdash's device check (issue 14): needs the prebuilt binary and a torch 2.11 install,
# no Rust. libtorch comes from $LIBTORCH, else from `python3 -c "import torch"`, else from
# gptdash's own per-user cache (scripts/libtorch.sh). Without a GPU it runs the CPU half
# and says CUDA was not checked. Exit 1 when a comparison fails.
#   scripts/gpu_check.sh [--bin PATH] [--out report.json] [--quick] [--nanogpt DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${LIBTORCH:-}" ]; then
  for py in python3 "${HOME}/.cache/gptdash/torch-2.11.0/bin/python"; do
    if lib=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
      LIBTORCH="$lib"
      export GPTDASH_TORCH_PYTHON="$py" # the reference side (--nanogpt) runs on this torch
      break
    fi
  done
fi
if [ -n "${LIBTORCH:-}" ]; then
  export LD_LIBRARY_PATH="${LIBTORCH}/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
exec python3 "$here/gpu_check.py" "$@"
