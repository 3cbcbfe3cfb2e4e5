"""`skinsynth finetune --base MODEL --data REAL --recipe RECIPE --method lora|full|textual-inversion|dreambooth --out DIR`, or
`skinsynth finetune --method scratch --data REAL --recipe RECIPE --out DIR [--size PRESET] [--config FILE]`."""

import argparse

from ..finetune import finetune
from ..finetune.scratch import ARCHITECTURES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a diffusion pipeline (SD, SDXL, SD3, Flux) on a labeled real dataset, captioned with a recipe",
        description=(
            "Adapt a Stable Diffusion 1.x/2.x, SDXL, SD3 or Flux text-to-image pipeline to the train split of a labeled dataset. "
            "Each image is captioned with one of the recipe's prompt templates filled with its own label and attribute "
            "columns, so the prompts `skinsynth generate` writes from that recipe are the ones the model learned. "
            "Methods: `lora` (small adapter; generate with --model BASE --lora DIR), `full` (the whole UNet or transformer; --model DIR) "
            "`textual-inversion` (SD 1.x/2.x; one new token per class; --model BASE --embeddings DIR with DIR/recipe.yaml) "
            "and `dreambooth` (LoRA or full, per --dreambooth-adapter, taught one rare instance token per class, e.g. `sks melanoma`, "
            "with prior preservation on --prior-images class images per class that the base makes once from the recipe's prompts; "
            "generate from DIR/recipe.yaml, whose class prompts carry the tokens). "
            "`scratch` needs no --base: it trains a whole small pipeline (autoencoder, then UNet and text encoder on its "
            "latents) from random weights; generate with --model DIR. "
            "A checkpoint is kept every --checkpoint-every steps in --checkpoint-dir (DIR.checkpoints beside --out); run the same command with --resume to continue. "
            "Several GPUs: `accelerate launch -m skinsynth finetune …`."
        ),
        epilog=(
            "Example: skinsynth finetune --base stable-diffusion-v1-5/stable-diffusion-v1-5 --data ./ham10000 "
            "--recipe ham10000.yaml --method lora --out ./sd-ham-lora --max-steps 2000 --mixed-precision fp16; "
            "from scratch: skinsynth finetune --method scratch --size cpu-small --data ./ham10000 --recipe ham10000.yaml "
            "--out ./ham-scratch --max-steps 6000"
        ),
    )
    required = parser.add_argument_group("what to train")
    required.add_argument("--base", default=None, metavar="MODEL_OR_PATH", help="Hub id or local folder of the pipeline to start from: SD 1.x/2.x, SDXL, SD3 or Flux (not with --method scratch)")
    required.add_argument("--data", required=True, metavar="REAL", help="labeled dataset (Hub id or `skinsynth prepare` folder) with a train split")
    required.add_argument("--recipe", required=True, help="recipe YAML whose classes and prompt templates caption the images")
    required.add_argument("--method", required=True, choices=["lora", "full", "textual-inversion", "dreambooth", "scratch"], help="what to train")
    required.add_argument("--out", required=True, metavar="DIR", help="output folder (new, or the run to continue with --resume)")
    required.add_argument("--revision", default=None, help="Hub revision of --base")
    required.add_argument("--data-revision", default=None, help="Hub revision of --data")

    training = parser.add_argument_group("training")
    training.add_argument("--max-steps", type=int, default=1000, metavar="N", help="optimizer steps to train in all (default: 1000)")
    training.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per step and process (default: 4)")
    training.add_argument("--gradient-accumulation-steps", type=int, default=1, metavar="N", help="batches per optimizer step (default: 1)")
    training.add_argument("--learning-rate", type=float, default=None, metavar="F", help="default: 1e-4 (lora), 1e-5 (full), 5e-4 (textual-inversion, scratch)")
    training.add_argument("--resolution", type=int, default=None, metavar="N", help="training image size (default: the base's own, e.g. 512)")
    training.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the data order, flips, captions and noise (default: 0)")
    training.add_argument("--caption-dropout", type=float, default=None, metavar="F", help="share of empty captions, for classifier-free guidance (default: 0.1 for scratch, else 0; 0.05-0.1 for long full fine-tunes)")
    training.add_argument(
        "--class-dropout", type=float, default=None, metavar="F",
        help="share of captions with the class left out (attributes kept): the model learns the caption that a recipe's "
             "`class_free_negative: true` guides against, so guidance pushes along the class alone (default: 0.1 for scratch, else 0)",
    )
    training.add_argument("--class-balance", type=float, default=0.0, metavar="F", help="draw images with probability count(class)^-F: 0 keeps the data's class frequencies (default), 1 shows every class equally often")
    training.add_argument("--lora-rank", type=int, default=4, metavar="N", help="rank of the LoRA adapters (default: 4)")
    training.add_argument("--snr-gamma", type=float, default=None, metavar="G", help="min-SNR-gamma loss weighting, as diffusers' --snr_gamma (default: 5 for scratch, else 0 = plain MSE)")
    training.add_argument("--ema", action="store_true", help="keep and export an exponential moving average of the UNet (--method full, scratch)")

    dreambooth = parser.add_argument_group("DreamBooth (--method dreambooth)")
    dreambooth.add_argument("--dreambooth-adapter", default=None, choices=["lora", "full"], help="what learns: LoRA adapters (default) or the whole UNet or transformer")
    dreambooth.add_argument(
        "--prior-images", type=int, default=None, metavar="N",
        help="class images per class for prior preservation, made once by the base from the recipe's prompts (without the instance token) "
        "into --checkpoint-dir/prior/ with `skinsynth generate` and reused on --resume; 0 for none (default: 100, as diffusers' --num_class_images)",
    )
    dreambooth.add_argument("--prior-loss-weight", type=float, default=None, metavar="F", help="weight of the class images' loss (default: 1.0, as diffusers)")

    architecture = parser.add_argument_group("architecture (--method scratch)")
    architecture.add_argument("--size", default=None, choices=list(ARCHITECTURES), help="architecture preset: tiny (toy data, 32 px), cpu-small (64 px, 2 CPU cores; the default), gpu-base (256 px)")
    architecture.add_argument("--config", default=None, metavar="FILE", help="YAML/JSON of architecture fields put over the preset, e.g. `unet_channels: [64, 128]` or `autoencoder_steps: 500`")
    training.add_argument("--weight-decay", type=float, default=1e-2, metavar="F", help="AdamW weight decay (default: 0.01)")
    training.add_argument("--max-grad-norm", type=float, default=1.0, metavar="F", help="gradient clipping (default: 1.0)")

    memory = parser.add_argument_group("speed and memory")
    memory.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="half-precision training on GPU (default: no)")
    memory.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None, help="recompute activations in the backward pass: less memory, slower (default: on for SDXL, SD3 and Flux)")
    memory.add_argument("--cache-latents", action="store_true", help="encode each training image (and its mirror image) with the VAE once, and keep its latent distribution in memory (not with --method scratch)")
    memory.add_argument("--use-8bit-adam", action=argparse.BooleanOptionalAction, default=None, help="bitsandbytes' 8-bit AdamW (needs bitsandbytes and CUDA; default: on for SDXL, SD3 and Flux where both are there)")
    memory.add_argument("--dataloader-workers", type=int, default=0, metavar="N", help="processes decoding images (default: 0, in the training process)")

    progress = parser.add_argument_group("checkpoints and validation")
    progress.add_argument("--checkpoint-every", type=int, default=500, metavar="N", help="save a checkpoint every N steps; the last two are kept (default: 500)")
    progress.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint (same data order and noise)")
    progress.add_argument(
        "--checkpoint-dir", default=None, metavar="STATE_DIR",
        help="where checkpoints (accelerate's pickled optimizer and random states) and the run's lock go, kept out of --out so "
        "that uploading --out publishes no pickle (default: --out's path + `.checkpoints`, beside it; --resume looks there). "
        "Delete it once the run is final",
    )
    progress.add_argument("--validate-every", type=int, default=500, metavar="N", help="write a validation grid every N steps, 0 for only at the end (default: 500)")
    progress.add_argument("--validation-images", type=int, default=4, metavar="N", help="images per class in the validation grid, 0 for none (default: 4)")
    parser.set_defaults(run=run)


def run(args) -> None:
    result = finetune(
        args.base, args.data, args.recipe, args.out, method=args.method, revision=args.revision, data_revision=args.data_revision,
        resume=args.resume, checkpoint_dir=args.checkpoint_dir, progress=not args.quiet, max_steps=args.max_steps, batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.learning_rate, resolution=args.resolution,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every, validation_images=args.validation_images, seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing, mixed_precision=args.mixed_precision, use_8bit_adam=args.use_8bit_adam, cache_latents=args.cache_latents,
        ema=args.ema, dreambooth_adapter=args.dreambooth_adapter, prior_images=args.prior_images, prior_loss_weight=args.prior_loss_weight, caption_dropout=args.caption_dropout, class_dropout=args.class_dropout, snr_gamma=args.snr_gamma, class_balance=args.class_balance, lora_rank=args.lora_rank, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, dataloader_workers=args.dataloader_workers, size=args.size, config=args.config,
    )
    metadata = result.metadata
    if args.method == "scratch":
        print(f"trained from scratch for {metadata['steps']} steps (autoencoder loss {metadata['autoencoder_final_loss']}, final loss {metadata['final_loss']}); wrote {args.out}")
    else:
        print(f"fine-tuned {args.base} ({args.method}) for {metadata['steps']} steps, final loss {metadata['final_loss']}; wrote {args.out}")
    if args.method in ("full", "scratch"):
        print(f"generate with:  skinsynth generate RECIPE --model {args.out} --out DATASET")
    elif args.method == "lora":
        print(f"generate with:  skinsynth generate RECIPE --model {args.base} --lora {args.out} --out DATASET")
    elif args.method == "dreambooth" and metadata["dreambooth"]["adapter"] == "full":
        print(f"generate with:  skinsynth generate {args.out}/recipe.yaml --model {args.out} --out DATASET")
    elif args.method == "dreambooth":
        print(f"generate with:  skinsynth generate {args.out}/recipe.yaml --model {args.base} --lora {args.out} --out DATASET")
    else:
        print(f"generate with:  skinsynth generate {args.out}/recipe.yaml --model {args.base} --embeddings {args.out} --out DATASET")
