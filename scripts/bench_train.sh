#!/usr/bin/env bash
# Side-by-side training throughput: gptdash (fused and plain step) against minGPT's and
# nanoGPT's own training step, same model, same random-token recipe, same libtorch,
# interleaved rounds on one machine; prints each run and the medians.
#
#   scripts/bench_train.sh --mingpt /tmp/minGPT [--nanogpt /tmp/nanoGPT] [--rounds 3] [--bf16]
#
# minGPT/nanoGPT are not part of this repository: clone them anywhere and pass the folder.
# minGPT needs numpy; if the torch virtualenv lacks it, point PYTHONPATH at a folder that
# has it (pip install --target DIR numpy).
set -euo pipefail
cd "$(dirname "$0")/.."

mingpt="" nanogpt="" rounds=3 bf16=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mingpt) mingpt="$2"; shift 2 ;;
    --nanogpt) nanogpt="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --bf16) bf16=1; shift ;;
    *) echo "bench_train.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

libtorch="$(./scripts/libtorch.sh)"
python="$(dirname "$libtorch")/../../../bin/python"
[ -x "$python" ] || python="${GPTDASH_PYTHON:-python3}"
./scripts/cargo.sh build --release --quiet
bin=target/release/gptdash
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run() { # name command...
  local name="$1"; shift
  local line
  line="$("$@" 2>/dev/null | tail -n 1)"
  echo "$name $line" | tee -a "$out/runs"
}

for r in $(seq "$rounds"); do
  echo "# round $r of $rounds" >&2
  [ -n "$mingpt" ] && run minGPT-f32 "$python" scripts/bench_reference.py --impl mingpt --repo "$mingpt"
  run gptdash-fused-f32 "$bin" bench train --json
  run gptdash-plain-f32 "$bin" bench train --json --step plain
  [ -n "$nanogpt" ] && run nanoGPT-f32 "$python" scripts/bench_reference.py --impl nanogpt --repo "$nanogpt"
  if [ "$bf16" = 1 ]; then
    [ -n "$mingpt" ] && run minGPT-bf16-autocast "$python" scripts/bench_reference.py --impl mingpt --repo "$mingpt" --bf16
    run gptdash-fused-bf16 "$bin" bench train --json --dtype bf16
  fi
done

python3 - "$out/runs" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, _, payload = line.partition(" ")
    try:
        runs.setdefault(name, []).append(json.loads(payload))
    except json.JSONDecodeError:
        print(f"{name}: no result ({payload.strip()[:80]})")
print()
print(f"{'program':24} {'tokens/s (median)':>18} {'ms/step':>8} {'final loss':>10} {'peak RSS MiB':>12}  runs")
med = {}
for name, rs in runs.items():
    tps = statistics.median(r["tokens_per_s"] for r in rs)
    med[name] = tps
    rss = max(r.get("peak_rss_mib") or r.get("peak_rss_mb") or 0 for r in rs)
    runs_txt = " ".join(f"{r['tokens_per_s']:.0f}" for r in rs)
    print(f"{name:24} {tps:18.0f} {statistics.median(r['ms_per_step'] for r in rs):8.1f} {rs[-1]['final_loss']:10.4f} {rss:12.0f}  {runs_txt}")
base = med.get("minGPT-f32")
if base:
    print()
    for name, tps in med.items():
        print(f"{name:24} {tps / base:5.2f}x minGPT")
EOF
