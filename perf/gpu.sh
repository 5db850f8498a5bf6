#!/usr/bin/env bash
# Every GPU figure of the project in one prepared script, for a lent GPU's short device time.
#
#   bash perf/gpu.sh [--smoke] [--pack] [--out DIR]          (default DIR: perf/results/gpu)
#
# Steps, in order, each under its own timeout (a failure or time-out is recorded and the next step runs):
#   1. gpu_info        device, torch, CUDA; the ceilings measured now: bf16 matmul TFLOP/s, memory-copy GB/s;
#                      torch SDPA with each kernel forced (flash, efficient, cuDNN) at the 1.3B's attention shape,
#                      forward and forward+backward, and the kernel SDPA picks by itself
#   2. train           perf.train: plain-loop training step of the 1.3B at 480p x 81 (AdamW, bf16 autocast,
#                      activation checkpointing through parallelize_dit): tokens/s, samples/s, peak memory, MFU.
#                      Second, so the pretraining figure is measured even when a later step overruns.
#   3. dit_sdpa        perf.dit: DiT 1.3B at 480p x 81 frames (21x60x104 latents = 32,760 tokens), bf16 weights,
#                      forward and forward+backward with activation checkpointing, ours only, torch SDPA
#   4. dit_flash/sage  the same with flash-attn / SageAttention, only where installed (else recorded as skipped)
#   5. vae             perf.vae: Wan-VAE encode/decode, bf16, 17 and 81 frames of 480x832, ours only
#   6. sampling        perf.sampling: the 1.3B at 480p x 81 frames x 50 steps (random weights, bf16, CFG), each mode
#                      timed over its first 3 steps and extrapolated to 50 (step time = mean after the first step):
#                      plain, fp8, sage (where installed), block offload, combined (cache preset + FP8 + sage),
#                      combined-lowmem (+ block offload); per-step and per-video time, speed-up, peak memory. No
#                      diffusers on the box (a torch Euler solver stands in for its schedulers), so no diffusers
#                      ratio and no quality guard here: those come from the CPU runs of perf.sampling.
#                      sampling.json is rewritten after each mode, so a time-out keeps the modes done.
#   7. train_compiled  the train step again with every block compiled (``--compile``: torch.compile, inductor),
#                      compiled during the warm-up steps: what fusing the norms, modulation and RoPE gains in MFU.
#                      Last of the timed steps, as it is the one a tight budget can best lose.
#   8. curation_models perf.curation_models CLIP ViT-L/14 images/s, only where open_clip is installed (the lent
#                      box has no open_clip: skipped). Not here: perf.captioner (needs vLLM or its .venv-vllm and
#                      a 7B-shape model build of minutes) and context-parallel attention (meaningless on 1 GPU).
#   9. summary         perf.gpu_summary: one JSON (DIR/gpu.json) of every figure with its unit, its ceiling
#                      from step 1 of the same run and the ratio; a table on stdout. With --pack, everything
#                      else in DIR (step JSONs, steps.tsv, logs/) then goes into DIR/gpu_run.tar.gz: DIR holds 2
#                      files, within the 8 that come back from a lent box (unpacked it leaves 14).
# Only torch, einops, safetensors and numpy are needed (no Ray, Lance, diffusers, open_clip, vLLM). Python's
# output is unbuffered, so a step killed at its timeout still leaves its log.
#
# Budget on one H100 (ceiling ~790 TFLOP/s bf16; FLOPs from perf.dit.forward_flops):
#   DiT 1.3B forward at 32,760 tokens + 512 text tokens = 0.283 PFLOP (70 % of it in the self-attention matmuls):
#   >= 0.36 s at the peak, ~0.8 s at 45%. A training step = 3 x forward = 0.85 PFLOP of model FLOPs, 1.13 PFLOP
#   executed with checkpointing's recomputed forward: ~3 s at 45%.
#   - gpu_info: 50 x 8192^3 bf16 matmuls (1.1 TFLOP each) + 2 GiB copies: ~10 s + start-up; SDPA at 12 x 32,760
#     x 128 is 6.6 TFLOP forward, 23 forward+backward: 3 kernels x 6 calls of each, ~5 s. Timeout 45 s.
#   - train: model built on the GPU, 2 warm-up + 5 timed steps of ~3 s: ~40 s; timeout 150 s.
#   - dit_sdpa: model build and randomisation on the host (~30 s), 3 forwards + 2 for memory (~5 s), 3 train
#     calls + rebuild + 2 for memory (~25 s): ~65 s (repeat 2); timeout 120 s. An out-of-memory, also in the
#     memory measurement, is recorded, not fatal.
#   - vae: ~5 MFLOP encode, ~8.4 MFLOP decode per pixel per frame (torch FlopCounterMode on the wan2.1 preset),
#     so 81x480x832 is ~0.16 PFLOP encode, ~0.27 PFLOP decode: seconds each; 2 clips x 2 ops x (warm-up +
#     2 timed + memory 2) calls: ~60 s; timeout 100 s.
#   - sampling: 50 steps x 2 CFG passes x ~0.8 s = ~80 s for ONE plain video, too long for six modes, so each mode
#     runs 3 steps (batch 2 with CFG: ~1.6 s each, ~5 s) and is extrapolated: host build and randomisation of the
#     1.3B (~30 s), per mode a copy cast and moved (~5 s) + 3 steps; the Wan-VAE decode of 81x480x832 (~5-10 s)
#     only for plain and the offload modes (the others reuse plain's): ~110 s; timeout 150 s.
#   - train_compiled: the train step plus the compile of one block graph (forward, backward, recompute) on 16
#     host cores, ~40-60 s: ~100 s; timeout 150 s, and what the budget has left.
#   Expected in all ~6-7 min. The step timeouts (45 + 150 + 120 + 100 + 150 + 150 s) are further capped by a
#   whole-script budget of 460 s (smoke: 240 s, for a busy CI machine), so the script ends within 8 minutes even
#   when steps hang; dit_sdpa and vae are capped so that sampling keeps its 150 s when both overrun and the
#   others take their expected time (train_compiled then gets what is left). On a lent GPU, the `run` tool's
#   command "bash perf/gpu.sh --pack --out $OUT" with timeout_s 500.
#
# --smoke: the same steps and code paths on the CPU at tiny sizes (tiny DiT, tiny VAE, 32x32 pixels), in under a
# minute (33 s here, 51 s in CI, most of it the inductor compile of train_compiled): what CI runs
# (tests/perf/test_gpu_smoke.py). Exit status: 0 when every step that ran succeeded.
set -u

SMOKE=0
PACK=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --pack) PACK=1; shift ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//' | grep -v '^set -u'; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (use --smoke, --pack, --out DIR)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
OUT="${OUT:-perf/results/gpu}"
mkdir -p "$OUT/logs" || exit 2
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # a step killed at its timeout keeps what it printed in its log

# What is here: CUDA, and the optional kernels/models (looked up, not imported; an absent module is "no").
PROBE_PY='
import importlib.util
import torch

def have(*names):
    try:
        return all(importlib.util.find_spec(name) is not None for name in names)
    except Exception:  # a broken install counts as absent
        return False

print("cuda=%d flash=%d sage=%d curation=%d" % (
    torch.cuda.is_available(), have("flash_attn_interface") or have("flash_attn"), have("sageattention"),
    have("open_clip", "cv2", "rapidocr_onnxruntime")))
'
# The interpreter: $PYTHON, else the repository's .venv, else python3 / python: the first that runs the probe
# (imports torch).
PY=""
for candidate in ${PYTHON:-} "$REPO/.venv/bin/python" python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && PROBE="$("$candidate" -c "$PROBE_PY" 2>/dev/null)"; then
    PY="$candidate"; break
  fi
done
[ -n "$PY" ] || { echo "gpu.sh: no python with torch found" >&2; exit 2; }
PROBE="${PROBE##*$'\n'}"  # its last line
[[ "$PROBE" =~ ^cuda=[01]\ flash=[01]\ sage=[01]\ curation=[01]$ ]] || {
  echo "gpu.sh: unexpected probe output: $PROBE" >&2; exit 2; }
eval "$PROBE"

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu; BUDGET=240
  SIZE=(--frames 5 --height 32 --width 32)
  DIT=(--config tiny "${SIZE[@]}" --dtype bf16 --repeat 1 --no-memory)
  VAE=(--preset tiny --size 32 --short 1 --long 5 --repeat 1 --no-memory)
  TRAIN=(--config tiny "${SIZE[@]}" --steps 2 --warmup 1 --ray-workers 0)
  CURATION=(--models tiny --batch-sizes 2 --images 4 --skip-ocr)
  SAMPLING=(--shape tiny --steps 4 --prompts 1 --timed-steps 2 --modes plain,fp8-sim,offload,combined,combined-lowmem)
else
  if [ "$cuda" != 1 ]; then
    echo "gpu.sh: torch sees no GPU; use --smoke for the CPU check" >&2; exit 2
  fi
  DEVICE=cuda; BUDGET=460
  SIZE=(--frames 81 --height 480 --width 832)
  DIT=(--config 1.3B "${SIZE[@]}" --dtype bf16 --repeat 2)
  VAE=(--preset wan2.1 --size 480x832 --short 17 --long 81 --repeat 2)
  TRAIN=(--config 1.3B "${SIZE[@]}" --steps 5 --warmup 2)
  CURATION=(--models vit-l-14 --batch-sizes 32,128 --images 256 --skip-ocr)
  SAMPLING=(--shape 1.3B --prompts 1 --timed-steps 3 --no-warmup --modes plain,fp8,sage,offload,combined,combined-lowmem)
fi
SUMMARY_RESERVE=20  # seconds kept for the summary

STEPS="$OUT/steps.tsv"
printf 'step\tstatus\trc\tseconds\tnote\n' > "$STEPS"

# run_step NAME TIMEOUT_S COMMAND...: runs under the smaller of its timeout and what the budget has left, logs to
# DIR/logs/NAME.log (and stdout), records ok / failed / timeout / skipped in DIR/steps.tsv.
run_step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - SUMMARY_RESERVE - SECONDS ))
  if [ "$left" -lt 10 ]; then
    printf '%s\tskipped\t\t0\tout of budget\n' "$name" >> "$STEPS"
    echo "== $name: skipped (out of budget)"; return 0
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  rm -f "$OUT/$name.json"  # the summary reads what this run's step wrote, also when the step stops early
  echo "== $name (timeout ${limit} s): $*"
  local start=$SECONDS rc status
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/logs/$name.log"
  rc=${PIPESTATUS[0]}
  case "$rc" in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  printf '%s\t%s\t%s\t%s\tlogs/%s.log\n' "$name" "$status" "$rc" "$(( SECONDS - start ))" "$name" >> "$STEPS"
  [ "$status" = ok ] || echo "== $name: $status (exit $rc), see $OUT/logs/$name.log"
}

skip_step() {
  printf '%s\tskipped\t\t0\t%s\n' "$1" "$2" >> "$STEPS"
  echo "== $1: skipped ($2)"
}

SMOKE_FLAG=(); [ "$SMOKE" = 1 ] && SMOKE_FLAG=(--smoke)
run_step gpu_info 45 "$PY" -m perf.gpu_info --device "$DEVICE" "${SMOKE_FLAG[@]}" --out "$OUT/gpu_info.json"
run_step train 150 "$PY" -m perf.train --device "$DEVICE" "${TRAIN[@]}" --out "$OUT/train.json"
run_step dit_sdpa 120 "$PY" -m perf.dit --device "$DEVICE" "${DIT[@]}" --grad-checkpointing \
  --attention-backend sdpa --no-reference --out "$OUT/dit_sdpa.json"
for backend in flash sage; do
  if [ "${!backend}" = 1 ] && [ "$DEVICE" = cuda ]; then
    run_step "dit_$backend" 120 "$PY" -m perf.dit --device "$DEVICE" "${DIT[@]}" --grad-checkpointing \
      --attention-backend "$backend" --no-reference --no-memory --out "$OUT/dit_$backend.json"
  else
    skip_step "dit_$backend" "$([ "$DEVICE" = cuda ] && echo "$backend kernel not installed" || echo "CUDA only")"
  fi
done
run_step vae 100 "$PY" -m perf.vae --device "$DEVICE" --dtype bfloat16 "${VAE[@]}" --no-reference \
  --out "$OUT/vae.json"
run_step sampling 150 "$PY" -m perf.sampling --device "$DEVICE" "${SAMPLING[@]}" --no-reference --out "$OUT"
run_step train_compiled 150 "$PY" -m perf.train --device "$DEVICE" "${TRAIN[@]}" --compile \
  --out "$OUT/train_compiled.json"
if [ "$curation" = 1 ]; then
  run_step curation_models 60 "$PY" -m perf.curation_models --device "$DEVICE" "${CURATION[@]}" \
    --out "$OUT/curation_models.json"
else
  skip_step curation_models "open_clip, cv2 or rapidocr_onnxruntime not installed"
fi

PACK_FLAG=(); [ "$PACK" = 1 ] && PACK_FLAG=(--pack)
"$PY" -m perf.gpu_summary --dir "$OUT" --smoke "$SMOKE" --seconds "$SECONDS" "${PACK_FLAG[@]}"
