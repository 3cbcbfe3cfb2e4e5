#!/usr/bin/env bash
# The conditioning ablation of README.md: the same from-scratch training on HAM10000 (64 px, STEPS=4000 at batch 8,
# every class drawn equally often, EMA) under several conditioning configurations, each judged by `skinsynth audit
# fidelity` (the real-500 classifiers of a real-only benchmark: how often they find the prompted class in a 75-per-
# class twin, beside their accuracy on real test images, on autoencoded real test images, and on a shared-seed grid).
#
#   . .venv/bin/activate && bash examples/conditioning_ablation.sh [HAM10000_DIR] [WORK_DIR] [VARIANT…]
#
# VARIANT names a row below (default: all). Every stage is skipped when its output exists, and training resumes from
# its last checkpoint: rerun the same command after an interruption. Two variants train at once (one per core).
# `python examples/ablation_table.py WORK_DIR` prints the table.
set -euo pipefail

HAM10000=${1:-../shared/data/ham10000}
WORK=${2:-./bench-output/conditioning-ablation}
shift $(( $# < 2 ? $# : 2 ))
STEPS=${STEPS:-4000}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
mkdir -p "$WORK"

# name | architecture fields over `--size cpu-small` | finetune options | recipe. `old` is the configuration before
# issue 20 (cross-attention at the lower UNet levels only, SD's scaled-linear schedule with epsilon prediction, plain
# MSE, GroupNorm down to one channel per group, 800 autoencoder steps); each following row up to `new` adds one change
# to it; `new` is all of them (the EMA also averages the text encoder, which no row isolates). `class-free` adds to
# `new`: a tenth of the captions without their class (`--class-dropout 0.1`), and guidance against each prompt
# without its class (the recipe's `class_free_negative`) instead of against the empty caption.
declare -A CONFIG OPTIONS RECIPE
OLD="pooled_text: false, attention_levels: lower, prediction_type: epsilon, zero_terminal_snr: false, min_channels_per_norm_group: 1, autoencoder_steps: 800"
ORDER=(old pooled-text attention-everywhere zero-snr-v min-snr norm-groups autoencoder-2000 new class-free)
CONFIG[old]="{$OLD}"; OPTIONS[old]="--snr-gamma 0"
CONFIG[pooled-text]="{$OLD, pooled_text: true}"; OPTIONS[pooled-text]="--snr-gamma 0"
CONFIG[attention-everywhere]="{$OLD, attention_levels: all}"; OPTIONS[attention-everywhere]="--snr-gamma 0"
CONFIG[zero-snr-v]="{$OLD, prediction_type: v_prediction, zero_terminal_snr: true}"; OPTIONS[zero-snr-v]="--snr-gamma 0"
CONFIG[min-snr]="{$OLD}"; OPTIONS[min-snr]="--snr-gamma 5"
CONFIG[norm-groups]="{$OLD, min_channels_per_norm_group: 4}"; OPTIONS[norm-groups]="--snr-gamma 0"
CONFIG[autoencoder-2000]="{$OLD, autoencoder_steps: 2000}"; OPTIONS[autoencoder-2000]="--snr-gamma 0"
CONFIG[new]="{}"; OPTIONS[new]=""
CONFIG[class-free]="{}"; OPTIONS[class-free]="--class-dropout 0.1"; RECIPE[class-free]="$WORK/twin-class-free.yaml"
VARIANTS=("${@:-${ORDER[@]}}")

[ -f "$WORK/ham10000/prepare.json" ] || skinsynth -q prepare "$HAM10000" --format ham10000 --out "$WORK/ham10000"
[ -f "$WORK/twin.yaml" ] || skinsynth -q recipe-from "$WORK/ham10000" --out "$WORK/twin.yaml" --per-class 75 --size 64 --steps 20 --guidance-scale 7.5
[ -f "$WORK/twin-class-free.yaml" ] || skinsynth -q recipe-from "$WORK/ham10000" --out "$WORK/twin-class-free.yaml" --per-class 75 --size 64 --steps 20 --guidance-scale 7.5 --class-free-negative
[ -d "$WORK/resnet-small" ] || python -c "from transformers import ResNetConfig; ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type='basic').save_pretrained('$WORK/resnet-small')"
printf 'arms:\n  - {name: real-500, real_per_class: 500}\n' > "$WORK/real-arms.yaml"
[ -f "$WORK/classifiers/results.json" ] || skinsynth -q benchmark --real "$WORK/ham10000" --arms "$WORK/real-arms.yaml" --scale 0.15 \
    --model "$WORK/resnet-small" --image-size 64 --epochs 20 --patience 10 --batch-size 32 --seeds 3 --device cpu --out "$WORK/classifiers"

variant() {
    local name=$1 dir="$WORK/$1" recipe=${RECIPE[$1]:-$WORK/twin.yaml}
    mkdir -p "$dir"
    echo "${CONFIG[$name]}" > "$dir/architecture.yaml"
    # shellcheck disable=SC2086
    [ -f "$dir/model/skinsynth_model.json" ] || skinsynth -q finetune --method scratch --size cpu-small --config "$dir/architecture.yaml" ${OPTIONS[$name]} \
        --data "$WORK/ham10000" --recipe "$recipe" --out "$dir/model" --max-steps "$STEPS" --batch-size 8 --class-balance 1 --ema \
        --checkpoint-every 200 --validate-every 0 --validation-images 4 $( [ -d "$dir/model" ] && echo --resume )
    skinsynth -q generate "$recipe" --model "$dir/model" --out "$dir/twin" --batch-size 16
    [ -f "$dir/fidelity/fidelity.json" ] || skinsynth -q audit fidelity "$dir/twin" --classifier "$WORK/classifiers/models/real-500" \
        --real "$WORK/ham10000" --out "$dir/fidelity"
}

running=0
for name in "${VARIANTS[@]}"; do
    [ -n "${CONFIG[$name]+set}" ] || { echo "unknown variant '$name'; choose from: ${ORDER[*]}" >&2; exit 2; }
    echo "== $name  ($(date -u +%H:%M:%S))"
    variant "$name" > "$WORK/$name.log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge 2 ]; then wait -n; running=$((running - 1)); fi
done
wait
python "$(dirname "$0")/ablation_table.py" "$WORK"
