#!/usr/bin/env bash
# Streaming preparation, measured the way the README quotes it: for each corpus file given
# (one document per line), peak RSS and wall time (/usr/bin/time -v) of
#   1. a cold preparation (a fresh cache) with the recipe's settings,
#   2. a start from that cache (`data prepare` again),
#   3. 200 training steps from the cache (tokens/s from the `done` event),
# then, with --python, the encode throughput of the same tokenizer.json through the Python
# `tokenizers` package's encode_batch on all cores against `data prepare --tokenizer`
# (cold, no cache), interleaved.
#
#   scripts/bench_corpus.sh [--config configs/imdb-sst2.toml] [--dtype f32] [--python] FILE...
#
# A 2 GB corpus for the bounded-memory claim: the IMDb text repeated 16 times, each copy
# shuffled (python: lines = open(f).read().splitlines(); random.Random(k).shuffle(...)).
set -euo pipefail
cd "$(dirname "$0")/.."

config=configs/imdb-sst2.toml dtype=f32 python=0 files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    --python) python=1; shift ;;
    -*) echo "bench_corpus.sh: unknown argument $1" >&2; exit 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || { echo "bench_corpus.sh: give one or more corpus files" >&2; exit 2; }

./scripts/cargo.sh build --release --quiet
bin=$PWD/target/release/gptdash
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

peak() { awk -F': ' '/Maximum resident/ {printf "%.0f MB", $2/1024} /Elapsed/ {printf ", %s wall", $2}' "$1"; }

for f in "${files[@]}"; do
  name=$(basename "$f")
  cache="$work/cache-$name"
  echo "== $name ($(du -m "$f" | cut -f1) MB)"
  XDG_CACHE_HOME="$cache" /usr/bin/time -v "$bin" --config "$config" data prepare --corpus "$f" --json \
    >"$work/cold.json" 2>"$work/cold.time"
  echo "cold preparation: $(peak "$work/cold.time")"
  XDG_CACHE_HOME="$cache" /usr/bin/time -v "$bin" --config "$config" data prepare --corpus "$f" --json \
    >"$work/warm.json" 2>"$work/warm.time"
  echo "start from the cache: $(peak "$work/warm.time")"
  XDG_CACHE_HOME="$cache" /usr/bin/time -v "$bin" --config "$config" train --corpus "$f" --dtype "$dtype" \
    --max-iters 200 --out "$work/run-$name" --json >"$work/train.json" 2>"$work/train.time"
  tps=$(grep '"event":"done"' "$work/train.json" | sed 's/.*"step_tokens_per_s":\([0-9.]*\).*/\1/')
  echo "200 steps from the cache: $(peak "$work/train.time"), ${tps%.*} tokens/s (steps alone)"
done

if [ "$python" = 1 ]; then
  libtorch="$(./scripts/libtorch.sh)"
  py="$(dirname "$libtorch")/../../../bin/python"
  [ -x "$py" ] || py="${GPTDASH_PYTHON:-python3}"
  f="${files[0]}"
  tok="$(ls "$work"/cache-"$(basename "$f")"/gptdash/corpora/*.tokenizer | head -1)"
  head -c -32 "$tok" >"$work/tokenizer.json" # the cache entry ends with its checksum
  cat >"$work/encode.py" <<'EOF'
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
t0 = time.time()
docs = [l.strip() for l in open(sys.argv[2], encoding="utf-8") if l.strip()]
n = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
print(f"python tokenizers encode_batch: {n} tokens in {time.time() - t0:.1f} s")
EOF
  for round in 1 2 3; do
    /usr/bin/time -f "gptdash data prepare --tokenizer (cold): %e s, %M KB" \
      "$bin" data prepare --corpus "$f" --mode documents --tokenizer "$work/tokenizer.json" --no-cache --json >/dev/null
    /usr/bin/time -f "python: %e s, %M KB" "$py" "$work/encode.py" "$work/tokenizer.json" "$f"
  done
fi
