#!/usr/bin/env bash
# One prepared GPU check (lent NVIDIA H200): round speed at K up to 4096 and R runs
# vectorized vs sequential (bench/many_runs.py), ~6-8 min.
#
#   bash bench/gpu.sh                 # from the repository root
#
# Installs nothing (the machine has no network). It needs only jax (CUDA), flax,
# optax and numpy; it first checks that bench/round_speed.py and what it imports pull in
# neither clu nor ml_collections (absent there), so the quickstart timing is skipped.
# Output: the table and the JSON line on stdout; copies in $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
OUT_DIR=${OUT:-/tmp/fedjax_med_bench}
mkdir -p "$OUT_DIR"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'EOF'
import sys
import jax, flax, optax, numpy
import bench.round_speed  # the benches and every fedjax_med module they use
import bench.many_runs
bad = [m for m in ("clu", "ml_collections") if m in sys.modules]
print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.devices()}), flax {flax.__version__}, "
      f"optax {optax.__version__}, numpy {numpy.__version__}")
if bad:
  sys.exit(f"fedjax_med imports {bad}, which the GPU machine lacks")
print("imports ok: no clu / ml_collections needed")
EOF

# --budget-s skips the remaining (model, K) cells after 7 min so the JSON line is
# always printed. Chunk: tuned at K=1024 among bounded sizes (never "all": all 4096 ResNet clients
# at once would not fit); the loop is timed on 256 clients and extrapolated.
timeout 570 "$PY" bench/round_speed.py \
  --models cnn,resnet8_gn --ks 16,64,256,1024,4096 \
  --chunk auto --tune-k 1024 --chunk-candidates 128,256,512,1024 \
  --loop-max-clients 256 --repeats 5 --budget-s 360 --skip-quickstart --large \
  "$@" 2>&1 | tee "$OUT_DIR/round_speed_gpu.txt"
tail -n 1 "$OUT_DIR/round_speed_gpu.txt" > "$OUT_DIR/round_speed_gpu.json"

# Many small runs on one GPU: 16 seeds of the CNN at K=64 in one vmapped round vs 16
# rounds one after another (the round ratio; no --end-to-end: it needs ml_collections).
timeout 100 "$PY" bench/many_runs.py --model cnn --runs 16 --k 64 --repeats 5 \
  2>&1 | tee "$OUT_DIR/many_runs_gpu.txt" || true
tail -n 1 "$OUT_DIR/many_runs_gpu.txt" > "$OUT_DIR/many_runs_gpu.json"
