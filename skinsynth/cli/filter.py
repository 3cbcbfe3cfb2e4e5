"""`skinsynth filter SYN --classifier DIR --out FILTERED`."""

from ..audit.filter import FilterConfig, filter_dataset


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "filter",
        help="keep only the synthetic images a classifier trained on real data recognizes",
        description=(
            "Write a new dataset with the rows of SYN that pass: not degenerate (constant, all-black), and scored by the "
            "classifier (or the mean of an ensemble) at least the threshold for their intended class. By default the "
            "threshold of a class is the classifier's mean confidence on real images of that class (from --real), as in "
            "cleanlab and ALIA. Scores are kept as columns (filter_score, clip_margin); counts per reason go to the new "
            "manifest. To filter while generating instead (and still reach every class count), use "
            "`skinsynth generate … --filter-classifier DIR`."
        ),
        epilog="Example: skinsynth filter ./synthetic --classifier ./bench/models/real-500 --real ./ham10000 --out ./synthetic-filtered",
    )
    parser.add_argument("synthetic", metavar="SYN", help="synthetic dataset (folder or Hub id)")
    parser.add_argument("--classifier", action="append", required=True, metavar="DIR", help="image classifier folder or Hub id, e.g. a model `skinsynth benchmark` saved (BENCH/models/ARM/seedN); BENCH/models/ARM is the ensemble of its seeds; repeat for more")
    parser.add_argument("--out", required=True, metavar="FILTERED", help="new dataset folder (must not exist yet)")
    parser.add_argument("--real", default=None, metavar="REAL", help="real dataset whose validation split sets the per-class thresholds")
    parser.add_argument("--real-split", default="validation", help="split of --real for the thresholds (default: validation)")
    parser.add_argument("--threshold", type=float, default=None, metavar="P", help="one fixed probability threshold for every class instead")
    parser.add_argument("--upper", type=float, default=None, metavar="P", help="also drop images scored above P (too easy)")
    parser.add_argument("--clip", default=None, metavar="MODEL", help="CLIP model: the class prompt must beat 'a photo', 'an image', 'text', 'a drawing'")
    parser.add_argument("--batch-size", type=int, default=32, help="images per classifier call (default: 32)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.set_defaults(run=run)


def run(args) -> None:
    config = FilterConfig(classifiers=tuple(args.classifier), threshold=args.threshold, upper=args.upper, real=args.real, real_split=args.real_split, clip=args.clip)
    manifest = filter_dataset(args.synthetic, args.out, config, batch_size=args.batch_size, device=args.device, progress=not args.quiet)
    counts = ", ".join(f"{reason}: {n}" for reason, n in manifest["filter"]["rejections"].items()) or "none"
    print(f"kept {manifest['filter']['kept']} images in {args.out} (rejected: {counts})")
