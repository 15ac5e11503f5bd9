#!/usr/bin/env bash
# Runs cargo with LIBTORCH pointing at the libtorch from scripts/libtorch.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LIBTORCH=$("$here/libtorch.sh")
export LIBTORCH
exec cargo "$@"
