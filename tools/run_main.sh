#!/usr/bin/env bash
# README command (1): install what is missing, build, and run the main job: LeNet-5 on
# Fashion-MNIST with a batch of 4096 under a 16 MiB arena, so every step runs as ~20
# micro-batches whose gradients add up exactly to the full-batch gradient. On the GPU if
# one is present, else on the CPU. Extra arguments are passed to `microbatch train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec "${MB_BUILD_DIR:-build}/tools/microbatch" train --model lenet5 --dataset fashion-mnist \
  --batch-size 4096 --memory-limit 16MiB --optimizer adamw --lr 0.02 --warmup-epochs 2 \
  --epochs 20 "$@"
