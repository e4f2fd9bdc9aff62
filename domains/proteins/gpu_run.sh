#!/usr/bin/env bash
# Proteins on one GPU (the README's GPU rows): the paper config and the mid-size config trained side by side
# through `flowsci fit` (configs unchanged; only time limits and output folders set here), then reflow, the
# sampling sweep and the speed table with the proteins diagnostics. Usage: bash domains/proteins/gpu_run.sh OUTDIR
# [PAPER_SECONDS] [SMALL_SECONDS]. Logs and JSON tables land in OUTDIR. DEVICE=cpu and STAGES="small tiny" (a subset
# of "paper small tiny") are for trying the script without a GPU.
set -u
out=${1:?usage: gpu_run.sh OUTDIR [PAPER_SECONDS] [SMALL_SECONDS]}
paper_s=${2:-150}
small_s=${3:-270}
mkdir -p "$out"
work=$(mktemp -d)
diag="python3 -m flowsci.domains.proteins.diagnostics"
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }
steps_of() { python3 -c "import torch,sys; c=torch.load(sys.argv[1],weights_only=True,map_location='cpu'); \
print('global_step', c['global_step'], 'epoch', c['epoch'])" "$1"; }

paper() {
  (cd "$work" && mkdir -p paper && cd paper && timeout $((paper_s + 120)) python3 -m flowsci.cli fit \
    --config proteins/reqflow_paper.yaml --trainer.max_time "$(hms "$paper_s")" --trainer.enable_progress_bar false)
  local ck=$work/paper/runs/lightning_logs/version_0/checkpoints/last.ckpt
  steps_of "$ck"
  $diag speed --ckpt "$ck" --device ${DEVICE:-cuda} --lengths 50,100,150,200,250,300 --batches 1,8 --nfe 10 \
    --json "$out/speed_paper_nfe10.json"
  $diag speed --ckpt "$ck" --device ${DEVICE:-cuda} --lengths 100,300 --batches 1 --nfe 50 --json "$out/speed_paper_nfe50.json"
  $diag sweep --ckpt "$ck" --device ${DEVICE:-cuda} --nfe 10,100 --seeds 0 --json "$out/sweep_paper.json"
}

small() {
  (cd "$work" && mkdir -p small && cd small && timeout $((small_s + 120)) python3 -m flowsci.cli fit \
    --config proteins/qflow_small.yaml --trainer.max_time "$(hms "$small_s")" --trainer.enable_progress_bar false)
  local ck=$work/small/runs/lightning_logs/version_0/checkpoints/last.ckpt
  steps_of "$ck"
  $diag sweep --ckpt "$ck" --device ${DEVICE:-cuda} --nfe 10,100 --seeds 0,1,2 --final-steps euler,x1 \
    --json "$out/sweep_small_qflow.json"
  local rf="$diag reflow --ckpt $ck --out $out/reqflow_small.pt --pairs 192 --nfe 10,20,50,100 --steps 600 \
    --lengths 60,80,100,120"  # pairs at the teacher's best NFE (the README's run, at commit 1ee02c3, fixed NFE 100)
  $rf --device "${DEVICE:-cuda}" || $rf --device "${DEVICE:-cuda}" --max-coil 1.0  # no sample passed the coil filter
  $diag sweep --ckpt "$out/reqflow_small.pt" --device ${DEVICE:-cuda} --nfe 10,20 --seeds 0,1,2 \
    --json "$out/sweep_small_reqflow.json"
}

tiny() {
  $diag speed --ckpt "$(python3 -c 'import flowsci.domains.proteins as p, pathlib; \
print(pathlib.Path(p.__file__).parent / "sample_data/reqflow_tiny.pt")')" --device ${DEVICE:-cuda} --lengths 100,300 \
  --batches 1,8 --nfe 10 --json "$out/speed_tiny_nfe10.json"
}

nvidia-smi -L || true
for stage in ${STAGES:-paper small tiny}; do
  [ "$stage" = tiny ] && continue
  $stage >"$out/$stage.log" 2>&1 &
done
wait
case " ${STAGES:-paper small tiny} " in *" tiny "*) tiny >"$out/tiny.log" 2>&1 ;; esac
grep -h -E "^\|" "$out"/*.log
