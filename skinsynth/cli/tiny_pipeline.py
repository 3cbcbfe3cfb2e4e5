"""`skinsynth tiny-pipeline DIR`."""

from ..tiny import tiny_pipeline


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tiny-pipeline",
        help="write a tiny random-weight Stable Diffusion pipeline (for tests and offline demos)",
        description=(
            "Write a Stable Diffusion pipeline with a tiny UNet, VAE and CLIP text encoder at random weights, and a "
            "tokenizer built offline (about 6 MB, 64x64 images). It loads with DiffusionPipeline.from_pretrained(DIR) "
            "like any checkpoint; its images are noise. Use it to try every command without a download or a GPU."
        ),
    )
    parser.add_argument("out", metavar="DIR", help="new folder to write the pipeline to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    parser.set_defaults(run=run)


def run(args) -> None:
    tiny_pipeline(args.out, seed=args.seed)
    print(f"wrote a tiny Stable Diffusion pipeline to {args.out}")
