#!/usr/bin/env bash
# The README's real run: HAM10000 converted by `skinsynth prepare`, a small ResNet trained from scratch at 64 px on
# CPU, the real-only arms of the akrout2023 preset (real-250 and real-500 per class) at --scale 0.15 (38 and 75 real
# images per class: HAM10000's rarest class, dermatofibroma, has 115 images in all), 3 seeds, tested on the real
# test split.
#
#   bash benchmarks/ham10000_real_only.sh [HAM10000_DIR] [WORK_DIR]
#
# Measured 2026-11-25 on 2 shared Xeon cores (CPU only, torch 2.13), lesion-grouped 70/15/15 split, 1,508 test
# images: 6 min 9 s in all. Mean ± std over 3 seeds:
#   real-250 (38/class): top-1 53.54 ± 2.45, top-2 70.76 ± 6.32, top-3 82.91 ± 9.36, balanced accuracy 41.28 ± 14.61
#   real-500 (75/class): top-1 59.26 ± 2.28, top-2 79.77 ± 1.78, top-3 90.76 ± 1.38, balanced accuracy 52.41 ± 2.23
#
# With a GPU, the same experiment with a pretrained model and the paper's counts:
#   skinsynth benchmark --real WORK_DIR/ham10000 --synthetic SYN --preset akrout2023 --model microsoft/resnet-50 --out WORK_DIR/bench-gpu
set -euo pipefail

HAM10000=${1:-../shared/data/ham10000}
WORK=${2:-./bench-output/ham10000-real-only}
PYTHON=${PYTHON:-python}
mkdir -p "$WORK"

if [ ! -f "$WORK/ham10000/prepare.json" ]; then
    "$PYTHON" -m skinsynth prepare "$HAM10000" --format ham10000 --out "$WORK/ham10000"
fi

# ResNet with one basic block per stage, widths 32-64-128-256 (0.7M parameters); config only: random init.
"$PYTHON" -c "from transformers import ResNetConfig; ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type='basic').save_pretrained('$WORK/resnet-small')"

time "$PYTHON" -m skinsynth benchmark --real "$WORK/ham10000" --preset akrout2023 --scale 0.15 \
    --model "$WORK/resnet-small" --image-size 64 --epochs 20 --patience 10 --batch-size 32 --seeds 3 --device cpu \
    --out "$WORK/benchmark"
