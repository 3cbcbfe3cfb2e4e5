"""`skinsynth benchmark --real REAL --synthetic SYN… --preset NAME --model MODEL --out DIR`."""

from pathlib import Path

from ..benchmark import PRESETS, benchmark
from ..benchmark.export import SAVE_MODELS
from ..benchmark.metrics import SELECT_BY


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="train a classifier on real, synthetic and mixed training sets and test it on real images",
        description=(
            "Train the same image classifier on several training sets (arms: so many real and/or synthetic images "
            "per class, sampled from the datasets' train splits) and test each on the real dataset's test split, "
            "stopping early on its validation split. Every arm runs over several seeds; results are mean ± std with "
            "a 95% bootstrap CI over the test images, written as JSON, CSV, a Markdown table and plots. Labels are "
            "matched by name (case, spaces and underscores ignored). Finished runs are kept in DIR/runs/, so the "
            "same command started again resumes; a run is reused only while what it was trained on is unchanged (each "
            "dataset's shard sha256s or Hub commit, the model's files, arm, seed and settings), so a dataset regenerated "
            "at the same path is trained on again. Several GPUs: `accelerate launch -m skinsynth benchmark …`."
        ),
        epilog=(
            "Example (CPU, from scratch, small): skinsynth benchmark --real ./ham10000 --synthetic ./synthetic "
            "--preset akrout2023 --scale 0.1 --model ./resnet-config --image-size 64 --out ./bench\n"
            "Example (GPU, pretrained): skinsynth benchmark --real ./ham10000 --synthetic user/skin-synthetic "
            "--preset akrout2023 --model microsoft/resnet-50 --out ./bench"
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--real", required=True, help="real dataset (local folder or Hub id) with train, validation and test splits")
    data.add_argument("--synthetic", nargs="+", default=[], metavar="SYN", help="synthetic dataset(s) (folders or Hub ids) with a train split; arms with synthetic images run once per dataset")
    data.add_argument("--test-dataset", nargs="+", default=[], metavar="OTHER",
                      help="also test every arm on these real datasets' test splits (e.g. train on HAM10000, test on PAD-UFES-20); labels matched by name or --label-map")
    data.add_argument("--label-map", default=None, metavar="FILE", help="YAML mapping `other name: real name` (`null` drops a class) for synthetic and --test-dataset labels that differ from the real dataset's")
    arms = data.add_mutually_exclusive_group(required=True)
    arms.add_argument("--preset", choices=list(PRESETS), help="akrout2023: 250 real, 500 real, 250+250 hybrid, 500 synthetic per class; ratio-sweep: 250 real + 0, 0.5, 1, 2, 4, 10× synthetic")
    arms.add_argument("--arms", metavar="ARMS.yaml", help="your own arms: `arms: [{name, real_per_class | real_fraction, synthetic_per_class | synthetic_ratio, real_seeds}]` "
                                                                "(`real_seeds: N`: a real-only arm on the union of the real images seeds 0..N-1 draw)")
    data.add_argument("--scale", type=float, default=1.0, metavar="F", help="multiply every per-class count by F (e.g. 0.1 for a quick run; default: 1)")
    data.add_argument("--allow-fewer", action="store_true", help="take all images of a class that has fewer than an arm asks for (default: error)")
    training = parser.add_argument_group("training")
    training.add_argument("--model", required=True, help="image classifier: Hub id (pretrained, e.g. microsoft/resnet-50; timm/… with timm installed), a model folder, or a folder with only config.json (from scratch)")
    training.add_argument("--revision", default=None, help="Hub revision of --model")
    training.add_argument("--image-size", type=int, default=None, metavar="N", help="input size in pixels (default: the model's image processor's, else 224)")
    training.add_argument("--epochs", type=int, default=50, metavar="N", help="most epochs per run (default: 50)")
    training.add_argument("--patience", type=int, default=10, metavar="N", help="stop after N epochs without a better validation --select-by metric (default: 10, as in the paper)")
    training.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per step (default: 32)")
    training.add_argument("--learning-rate", type=float, default=3e-4, metavar="LR", help="AdamW peak learning rate, cosine schedule (default: 3e-4)")
    training.add_argument("--select-by", choices=SELECT_BY, default=None,
                          help="validation metric early stopping keeps the best epoch by (default: top1 with --preset akrout2023, as in the paper; else balanced_accuracy)")
    training.add_argument("--class-weighted", action="store_true", help="weight the cross-entropy by inverse class frequency in each arm's training set")
    training.add_argument("--seeds", type=int, default=3, metavar="N", help="repeat every arm with seeds 0…N-1 (default: 3)")
    training.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: the best available)")
    training.add_argument("--workers", type=int, default=None, metavar="N", help="DataLoader worker processes for augmentation (default: none on the CPU, where images are decoded once into memory; cores - 1, at most 8, on a GPU)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="DIR", help="output folder: results.json, results.csv, results.md, plots, runs/, models/")
    output.add_argument("--save-models", choices=SAVE_MODELS, default="real",
                        help="save runs as transformers model folders DIR/models/ARM/seedN (with a model card): real = every seed of the real-only arms "
                             "(default; pass DIR/models/ARM to `filter --classifier` as an ensemble), best = each arm's best seed by --select-by, all, none")
    output.add_argument("--update-card", default=None, metavar="SYN_DIR", help="also write SYN_DIR/reports/benchmark.json and rebuild that synthetic dataset's card")
    parser.set_defaults(run=run)


def run(args) -> None:
    summary = benchmark(
        args.real, args.synthetic, model=args.model, out=args.out, preset=args.preset, arms=args.arms, image_size=args.image_size,
        epochs=args.epochs, batch_size=args.batch_size, seeds=args.seeds, scale=args.scale, device=args.device, allow_fewer=args.allow_fewer,
        label_map=args.label_map, patience=args.patience, learning_rate=args.learning_rate, workers=args.workers, update_card=args.update_card,
        select_by=args.select_by, class_weighted=args.class_weighted, save_models=args.save_models, test_datasets=args.test_dataset,
        revision=args.revision, progress=not args.quiet, command=args.command_line,
    )
    if summary:
        print(Path(args.out, "results.md").read_text(encoding="utf-8"), end="")
        print(f"wrote {args.out}: results.json, results.csv, results.md and plots ({summary['seconds']:.0f} s)")
