#!/usr/bin/env bash
# Every row of issue 15's table, ours beside the reference path, in one run (target: under 8 minutes on one
# H200), writing one JSON: $OUT/gpu-suite.json (./gpu-suite.json without OUT), plus a profile trace of
# DiT-XL/2 batch 128 (profile-xl2-b128.json.gz) beside it. Each row has its own timeout; a row that fails or
# runs out of time is recorded with its exit status and the suite goes on.
#
#   bash benchmarks/gpu_suite.sh             # on the GPU, from the repository root
#   bash benchmarks/gpu_suite.sh --dry-run   # tiny models on the CPU, end to end in about a minute
#
# Wheels the device image lacks (diffusers, torch-fidelity, scipy, ...) are installed from ./.wheels when
# that folder exists (pip download them here, carry .wheels).
set -uo pipefail

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT_DIR="${OUT:-.}"
ROWS="$OUT_DIR/gpu-suite-rows"
mkdir -p "$ROWS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
if [[ -d .wheels ]]; then
  "$PY" -m pip install -q --no-index --find-links .wheels diffusers torch-fidelity scipy pyyaml tqdm || true
fi

if ((DRY)); then  # tiny shapes: every command and the JSON merge run, the numbers mean nothing
  XL=DiT-T/4 B4=DiT-T/4 B32=2 B128=2 B256=2 GEO="--input-size 16 --num-classes 10 --device cpu"
  STEPS="--train-steps 1 --warmup 1" SAMPLE_N=2 SAMPLE_STEPS=2 CKPT="0 2" T=120
  VAE="--device cpu --resolution 32 --batch-size 1 --iters 1 --warmup 1"
  EVAL="--device cpu --num-samples 10 --num-ref 10 --resolution 32 --batch-size 10 --skip-torch-fidelity"
  VAE_COMPILE=""  # inductor's CPU compile of the VAE takes minutes
  PROFILE="--steps 1 --warmup 1"
else
  XL=DiT-XL/2 B4=DiT-B/4 B32=32 B128=128 B256=256 GEO="--device cuda"
  STEPS="--train-steps 8 --warmup 3" SAMPLE_N=64 SAMPLE_STEPS=250 CKPT="0 4 8" T=150
  VAE="--device cuda --resolution 256 --batch-size 128 --iters 5 --warmup 2"
  EVAL="--device cuda"
  VAE_COMPILE="--compile"
  PROFILE="--steps 3 --warmup 3"
fi

STATUS="$ROWS/status.tsv"
: >"$STATUS"
row() {  # row NAME TIMEOUT_S COMMAND...: run it, note its exit status and seconds
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  printf '%s\t%s\t%s\n' "$name" "$?" "$((SECONDS - start))" >>"$STATUS"
}

sample_row() {  # sample_row NAME PATH COMPILE_MODE: guided DDPM sampling alone (no training run first)
  row "$1" "$T" "$PY" -c "
import json, sys
from scaling.bench import bench_sampling
geo = dict(input_size=16, num_classes=10, device='cpu') if $DRY else dict(device='cuda')
r = bench_sampling('$XL', path='$2', num_images=$SAMPLE_N, sampling_steps=$SAMPLE_STEPS, cfg_scale=1.5,
                   compile_mode='$3', **geo)
open('$ROWS/$1.json', 'w').write(json.dumps(r))
print(r)"
}

row profile_xl2_b128 "$T" "$PY" benchmarks/profile_train.py --model "$XL" --batch-size "$B128" $GEO $PROFILE \
  --trace "$OUT_DIR/profile-xl2-b128.json.gz" --json "$ROWS/profile_xl2_b128.json"
row train_xl2_b32 "$T" "$PY" -m scaling.cli bench --model "$XL" --batch-size "$B32" $GEO $STEPS \
  --sample-images 0 --json "$ROWS/train_xl2_b32.json"
row train_xl2_b128_reference "$T" "$PY" -m scaling.cli bench --model "$XL" --batch-size "$B128" $GEO $STEPS \
  --sample-images 0 --paths reference --json "$ROWS/train_xl2_b128_reference.json"
for k in $CKPT; do
  row "train_xl2_b128_fast_ckpt$k" "$T" "$PY" -m scaling.cli bench --model "$XL" --batch-size "$B128" $GEO $STEPS \
    --sample-images 0 --paths fast --checkpoint-blocks "$k" --json "$ROWS/train_xl2_b128_fast_ckpt$k.json"
done
row train_b4_b256 "$T" "$PY" -m scaling.cli bench --model "$B4" --batch-size "$B256" $GEO $STEPS \
  --sample-images 0 --json "$ROWS/train_b4_b256.json"
sample_row sample_xl2_reference reference default
sample_row sample_xl2_fast fast default
sample_row sample_xl2_fast_cudagraphs fast reduce-overhead
row vae_reference "$T" "$PY" benchmarks/bench_vae.py $VAE --precisions fp32 --json "$ROWS/vae_reference.json"
row vae_fast "$T" "$PY" benchmarks/bench_vae.py $VAE --precisions bf16 --channels-last $VAE_COMPILE \
  --json "$ROWS/vae_fast.json"
row eval "$T" "$PY" benchmarks/bench_eval.py $EVAL --workdir "$OUT_DIR/eval-tmp" --json "$ROWS/eval.json"
rm -rf "$OUT_DIR/eval-tmp"

"$PY" - "$ROWS" "$OUT_DIR/gpu-suite.json" "$DRY" <<'EOF'
import json, sys
from pathlib import Path

rows_dir, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
suite = {"dry_run": dry, "rows": {}}
for line in (rows_dir / "status.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    result = rows_dir / f"{name}.json"
    suite["rows"][name] = {"rc": int(rc), "seconds": int(seconds),
                           "result": json.loads(result.read_text()) if result.is_file() else None}
suite["total_seconds"] = sum(r["seconds"] for r in suite["rows"].values())
out.write_text(json.dumps(suite, indent=1) + "\n")
failed = [n for n, r in suite["rows"].items() if r["rc"] != 0]
print(f"wrote {out}: {len(suite['rows'])} rows in {suite['total_seconds']} s; failed: {', '.join(failed) or 'none'}")
EOF
