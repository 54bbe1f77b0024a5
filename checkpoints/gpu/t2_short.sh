#!/bin/bash
# Device side: a short Track 2 run (e.g. the device time left after a Track 1 call) with the
# envelope-correlation loss, no probe. Usage: bash checkpoints/gpu/t2_short.sh MINUTES
# EXTRA: more lrac-train options, e.g. growing the model further (lrac/train/grow.py):
#   EXTRA="--set model.frame.encoder_layers=10 --set model.frame.encoder_mlp_ratio=3
#          --set model.frame.decoder_layers=8"  INIT=lrac/pretrained/t2.pt (a model file: step 0)
set -u
T0=$(date +%s); MIN=${1:-2}; export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 checkpoints/gpu/prep.py || exit 1
INIT=${INIT:-checkpoints/t2-gd.pt}   # the t2 line's continuation file (already grown)
S=$(python3 -c "import torch; print(torch.load('$INIT', map_location='cpu', weights_only=False).get('step', 0))")
python3 -m lrac.cli.train --config t2 --track 2 --init-from $INIT --batch-size ${B:-256} --device cuda --no-progress \
  --threads 1 --data /tmp/train.speech.scp --valid .gpu/lists/valid13.scp --noise .gpu/lists/train.noise.scp \
  --rir .gpu/lists/train.rir.scp --valid-noise .gpu/lists/valid.noise.scp --valid-rir .gpu/lists/valid.rir.scp \
  --cache-dir /tmp/cache --set data.min_seconds=1.0 --set train.segment_samples=28800 \
  --set train.warmup_steps=1000000 --set train.valid_batches=2 --workers 14 \
  --set train.checkpoint_every_minutes=0.5 --set train.log_every_steps=50 --set train.valid_every_steps=200 \
  --set train.lambda_estoi=25 --set train.lr=2e-4 \
  --set train.lr_decay_from_step=$S --set train.lr_gamma=0.8 --set train.lr_gamma_every_steps=150 \
  --set train.max_minutes=$MIN ${EXTRA:-} --out /tmp/runs/t2e-gpu > $OUT/t2e.log 2>&1
echo "[$(( $(date +%s) - T0 ))s] trained"; tail -n 3 $OUT/t2e.log
python3 checkpoints/gpu/export.py /tmp/runs/t2e-gpu
