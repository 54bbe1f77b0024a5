#!/bin/bash
# Device-side training script: Track 1 and Track 2 (or two Track 1 arms) side by side on one GPU.
# Usage (from the repo root on the device): bash checkpoints/gpu/run.sh END_SECONDS (see checkpoints/README.md)
# Starting points: T1_INIT and T2_INIT (continuation files of checkpoints/). For an A/B of two Track 1 runs:
# B_ARGS="lrac-train arguments of the second run" replacing the Track 2 ones, N1/N2 the run names;
# PRE="a command run before training".
set -u
# B: the step is bound by kernel launches more than by the GPU (batch 64 -> 128 gave 1.55x the audio
# per second, the GPU 29-46 % busy), so a larger batch is nearly free (checkpoints/README.md).
T0=$(date +%s); END=${1:-545}; LOG=${LOG:-50}; PROBE=${PROBE:-200}; DEV=${DEV:-cuda}; B=${B:-256}; W1=${W1:-7}; W2=${W2:-7}
export PYTHONUNBUFFERED=1
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
[ -n "${SKIP_PIP:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, soundfile, lrac; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'sf', soundfile.__version__)" || exit 1
python3 checkpoints/gpu/prep.py || exit 1; log prepared
T1_INIT=${T1_INIT:-checkpoints/t1-gd.pt}; T2_INIT=${T2_INIT:-checkpoints/t2-gd.pt}
N1=${N1:-t1}; N2=${N2:-t2}; LR=${LR:-5e-4}; TH=${TH:-2}
[ -z "${PRE:-}" ] || eval "$PRE" || exit 1
step_of() { python3 -c "import torch; print(torch.load('$1', map_location='cpu', weights_only=False)['step'])"; }
S1=$(step_of $T1_INIT) && S2=$(step_of $T2_INIT) || exit 1
TR="python3 -m lrac.cli.train"
C="--config t1 --batch-size $B --device $DEV --no-progress --threads $TH --data /tmp/train.speech.scp
 --valid .gpu/lists/valid13.scp --cache-dir /tmp/cache --set data.min_seconds=1.0
 --set train.segment_samples=28800 --set train.warmup_steps=1000000 --set train.valid_batches=2
 --set train.checkpoint_every_minutes=1.5 --set train.checkpoint_every_steps=2000 --set train.log_every_steps=$LOG"
T1="--track 1 --init-from $T1_INIT --workers $W1"
T2=${B_ARGS:-"--track 2 --init-from $T2_INIT --workers $W2 --noise .gpu/lists/train.noise.scp
 --rir .gpu/lists/train.rir.scp --valid-noise .gpu/lists/valid.noise.scp --valid-rir .gpu/lists/valid.rir.scp"}
$TR $C $T1 --out /tmp/p1 --stop-stage 3 2>&1 | tail -4 && $TR $C $T2 --out /tmp/p2 --stop-stage 3 2>&1 | tail -6 || exit 1
log stages done
# probes: 200 steps each, side by side (smoke test and step rate)
$TR $C $T1 --out /tmp/p1 --stage 5 --max-steps $((S1 + PROBE)) > /tmp/p1.log 2>&1 &
$TR $C $T2 --out /tmp/p2 --stage 5 --max-steps $((S2 + PROBE)) > /tmp/p2.log 2>&1 &
wait
tail -n 3 /tmp/p1.log /tmp/p2.log
R1=$(python3 checkpoints/gpu/rate.py /tmp/p1/train.jsonl); R2=$(python3 checkpoints/gpu/rate.py /tmp/p2/train.jsonl)
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
log "probe steps/s: t1 $R1 t2 $R2"
[ "$R1" = "0.0" ] && { cat /tmp/p1.log | tail -20; exit 1; }
[ "$R2" = "0.0" ] && { cat /tmp/p2.log | tail -20; exit 1; }
NOW=$(( $(date +%s) - T0 )); SECS=$(( END - NOW - 30 ))   # ~30 s of start-up before fit() counts
MIN=$(python3 -c "print(round($SECS / 60, 2))")
# lr $LR at the start step, 0.8x ten times over the run (0.11 x LR at the end)
sched() { python3 -c "
n = max(int($1 * $SECS * 0.9), 100); every = max(n // 10, 10)
print(f'--set train.lr=$LR --set train.lr_decay_from_step=$2 --set train.lr_gamma=0.8 --set train.lr_gamma_every_steps={every} --set train.valid_every_steps={max(every // 2, 10)}')"; }
A1=$(sched $R1 $S1); A2=$(sched $R2 $S2)
log "main runs: $MIN min; t1: $A1; t2: $A2"
timeout -s TERM $((SECS + 60)) $TR $C $T1 $A1 --out /tmp/runs/$N1-gpu --stage 5 --set train.max_minutes=$MIN > $OUT/$N1.log 2>&1 &
timeout -s TERM $((SECS + 60)) $TR $C $T2 $A2 --out /tmp/runs/$N2-gpu --stage 5 --set train.max_minutes=$MIN > $OUT/$N2.log 2>&1 &
sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; top -bn1 | head -15
wait
log trained; tail -n 4 $OUT/$N1.log $OUT/$N2.log
python3 checkpoints/gpu/export.py /tmp/runs/$N1-gpu /tmp/runs/$N2-gpu
log done
