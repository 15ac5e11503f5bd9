#!/usr/bin/env bash
# The whole device check in one call on a lent GPU machine (torch 2.11, no Rust), for the
# few minutes such a machine is lent. Prepare here, then run there from the repo root:
#
#   ./scripts/cargo.sh build --release && mkdir -p target/gpu
#   cp target/release/gptdash target/gpu/ && strip target/gpu/gptdash
#   git --git-dir=<a nanoGPT mirror> archive HEAD | tar -x -C target/gpu/nanoGPT   # outside the repo's files
#   run (carry: target/gpu) scripts/gpu_session.sh
#
# Writes $OUT/gpu_check.json, gpu_check.txt (the table) and nvidia-smi.txt. Exit code:
# gpu_check's (1 when a comparison failed).
set -uo pipefail
out="${OUT:-.}"
lib=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))') || {
  echo "error: python3 has no torch here" >&2
  exit 2
}
export LIBTORCH="$lib" LD_LIBRARY_PATH="$lib/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GPTDASH_TORCH_PYTHON=python3
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
args=(--bin target/gpu/gptdash --out "$out/gpu_check.json")
[ -d target/gpu/nanoGPT ] && args+=(--nanogpt target/gpu/nanoGPT)
python3 scripts/gpu_check.py "${args[@]}" "$@" 2>&1 | tee "$out/gpu_check.txt"
exit "${PIPESTATUS[0]}"
