"""`skinsynth generate RECIPE --model MODEL --out DIR`."""

from ..audit.copy_filter import CopyFilterConfig
from ..audit.filter import FilterConfig
from ..errors import SkinsynthError
from ..generate import generate


DEFAULT_REAL = ""  # `--filter-copies` without a value: the model's own training data


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a labeled synthetic dataset from a recipe",
        description=(
            "Generate the images a recipe describes with a diffusers text-to-image pipeline, into Arrow shards in the "
            "Hugging Face Hub layout (load them with datasets.load_dataset(DIR)). Every image gets its own seed from "
            "the recipe, so the same command always gives the same dataset, and an interrupted run started again "
            "finishes it. Several GPUs: `accelerate launch -m skinsynth generate …`."
        ),
        epilog="Example: skinsynth generate examples/demo.yaml --model ./tiny-sd --out ./demo-output --batch-size 8",
    )
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML file (classes, attributes, prompts, splits, generation settings)")
    parser.add_argument("--model", required=True, help="Hub id or local folder of a diffusers text-to-image pipeline (e.g. a `skinsynth finetune --method full` output)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output dataset folder; an unfinished run there is resumed")
    parser.add_argument("--batch-size", type=int, default=8, help="images per pipeline call (default: 8); resume with the same value for bitwise-identical images")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available; one per process under accelerate)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="weights dtype (default: float16 on CUDA, else float32)")
    parser.add_argument("--cpu-offload", action="store_true", help="keep the models in CPU memory and move each to the GPU only while it runs: less GPU memory (about the denoiser's), somewhat slower, same images")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--lora", default=None, metavar="PATH", help="LoRA weights to load (a `skinsynth finetune --method lora` output)")
    parser.add_argument("--embeddings", action="append", default=[], metavar="PATH", help="textual-inversion embeddings (.safetensors file or folder); repeatable")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images of each split (a quick preview; a separate run)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a custom pipeline's own code to run")
    parser.add_argument("--allow-pickle", action="store_true", help="let --lora and --embeddings load pickled .bin weights (they can run code; default: safetensors only)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="when done, publish the dataset on the Hub under REPO_ID (as `skinsynth push`; token from HF_TOKEN or `hf auth login`)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    filtering = parser.add_argument_group("filtering", "keep only images a classifier trained on real data recognizes; rejected images are retried with their next seed (up to the recipe's generation.max_attempts), so every class and attribute cell reaches its count; "
                                          "an image still rejected stops the run (exit code 2) naming its cell: raise max_attempts and run the same command again (finished shards are kept)")
    filtering.add_argument("--filter-classifier", action="append", default=[], metavar="DIR", help="image classifier folder: a model `skinsynth benchmark` saved (BENCH/models/ARM/seedN), or BENCH/models/ARM for all its seeds; repeat for an ensemble (probabilities averaged)")
    filtering.add_argument("--filter-threshold", type=float, default=None, metavar="P", help="keep images whose intended class has at least this probability (default: per class, the classifier's mean confidence on real images of the class, from --filter-real)")
    filtering.add_argument("--filter-real", default=None, metavar="REAL", help="real dataset whose validation split sets the per-class thresholds")
    filtering.add_argument("--filter-upper", type=float, default=None, metavar="P", help="also drop images scored above P (too easy to teach anything)")
    filtering.add_argument("--filter-clip", default=None, metavar="MODEL", help="CLIP model (Hub id or folder): the class prompt must beat the decoys 'a photo', 'an image', 'text', 'a drawing'")
    copies = parser.add_argument_group("copy filter", "remake every image that is a near copy of one of the model's training images, scored and thresholded as `skinsynth audit memorization` does "
                                       "(the threshold is calibrated on the real dataset's held-out split at a stated false-positive rate; the training images' features and the calibration are cached and reused)")
    copies.add_argument("--filter-copies", nargs="?", const=DEFAULT_REAL, default=None, metavar="REAL",
                        help="the real dataset the model was trained on (default: the training data recorded in the model's skinsynth_model.json, or its LoRA's)")
    copies.add_argument("--filter-copies-features", default="keypoints", metavar="F", help="the audit's --features (default: keypoints)")
    copies.add_argument("--filter-copies-false-positive-rate", type=float, default=0.01, metavar="P", help="share of new patients' images the threshold flags (default: 0.01)")
    parser.set_defaults(run=run)


def run(args) -> None:
    image_filter = None
    if args.filter_classifier:
        image_filter = FilterConfig(classifiers=tuple(args.filter_classifier), threshold=args.filter_threshold, upper=args.filter_upper, real=args.filter_real, clip=args.filter_clip)
    elif args.filter_threshold is not None or args.filter_real or args.filter_upper is not None or args.filter_clip:
        raise SkinsynthError("the --filter-* options need at least one `--filter-classifier DIR`")
    copy_filter = None
    if args.filter_copies is not None:
        copy_filter = CopyFilterConfig(real=args.filter_copies or None, features=args.filter_copies_features, false_positive_rate=args.filter_copies_false_positive_rate)
    manifest = generate(
        args.recipe, args.model, args.out, batch_size=args.batch_size, device=args.device, dtype=args.dtype, revision=args.revision,
        lora=args.lora, embeddings=args.embeddings, limit=args.limit, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle, progress=not args.quiet,
        push_to_hub=args.push_to_hub, private=args.private,
        image_filter=image_filter, copy_filter=copy_filter, cpu_offload=args.cpu_offload,
    )
    counts = ", ".join(f"{split}: {info['num_rows']}" for split, info in manifest["splits"].items())
    print(f"wrote {args.out} ({counts})")
    if "copy_filter" in manifest:
        checked = manifest["copy_filter"]
        per_class = ", ".join(f"{name} {count}" for name, count in checked["rejections_per_class"].items()) or "none"
        print(f"copy filter: {checked['rejections']} near copies of {checked['num_train']} training images remade (score > {checked['threshold']:g}, "
              f"false-positive rate {checked['false_positive_rate']['value']:.2%}); per class: {per_class}")
    source = args.push_to_hub or str(args.out)
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    print(f"load it with:  from datasets import load_dataset; ds = load_dataset({source!r})")
