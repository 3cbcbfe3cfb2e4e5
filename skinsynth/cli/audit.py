"""`skinsynth audit memorization SYN --train REAL …` and `skinsynth audit quality SYN --real REAL …`."""

from ..audit.features import ContrastiveConfig
from ..audit.memorization import CALIBRATIONS, audit_memorization
from ..audit.quality import audit_quality

FEATURES_HELP = (
    "feature space: a Hub id or folder of a transformers vision model (e.g. facebook/dinov2-base, or an SSCD-style copy "
    "detector), `classifier:DIR` (the penultimate layer of a model `skinsynth benchmark` saved in BENCH/models/ARM/seedN), or `contrastive` (a small "
    "encoder trained here on the real training images; no download). Default `auto`: DINOv2 if the Hub is reachable, else contrastive"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="audit a synthetic dataset: memorized training images, distribution quality",
        description="Audits of a synthetic dataset against real data. Each writes a JSON report and pictures into --out; "
        "--update-card also puts the report into the dataset's card.",
    )
    audits = parser.add_subparsers(dest="audit", metavar="AUDIT", required=True)

    memorization = audits.add_parser(
        "memorization",
        help="find synthetic images that copy a real training image",
        description=(
            "Find every synthetic image's nearest real training image by cosine similarity (exact search, in blocks) and flag "
            "it when the similarity is above the copy threshold. By default the threshold calibrates itself (Dar et al. 2024): "
            "the 95th percentile of each real training image's similarity to its nearest real validation image, so a flagged "
            "image is closer to a training photo than 95% of real photos of other patients are. Writes memorization.json "
            "(flagged rows with their nearest training row), a histogram against the train-vs-validation baseline, and the "
            "closest pairs side by side."
        ),
        epilog="Example: skinsynth audit memorization ./synthetic --train ./ham10000 --features contrastive --out ./audit",
    )
    memorization.add_argument("synthetic", metavar="SYN", help="synthetic dataset (folder or Hub id); all its splits are audited")
    memorization.add_argument("--train", required=True, metavar="REAL", help="real dataset the generator was trained on (its train split; its validation split calibrates the threshold)")
    memorization.add_argument("--out", required=True, metavar="DIR", help="folder for memorization.json, the PNGs and a cached contrastive encoder")
    memorization.add_argument("--features", default="auto", metavar="F", help=FEATURES_HELP)
    memorization.add_argument("--threshold", type=float, default=None, metavar="X", help="fixed cosine-similarity threshold instead of the self-calibrated one (SSCD uses 0.5)")
    memorization.add_argument("--percentile", type=float, default=95.0, help="percentile of the train-to-validation similarities used as the threshold (default: 95)")
    memorization.add_argument("--calibration", default="train-to-validation", choices=CALIBRATIONS, help="baseline of the self-calibrated threshold: each real train image's nearest validation image (Dar et al. 2024, default), or each validation image's nearest train image (a nominal false-positive rate on new patients whatever the split sizes)")
    memorization.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch", "faiss"], help="exact search backend (default: torch on a GPU --device, numpy on the CPU; faiss if installed)")
    _common(memorization)
    memorization.set_defaults(run=run_memorization)

    quality = audits.add_parser(
        "quality",
        help="measure how close the synthetic distribution is to the real one",
        description=(
            "Fréchet distance, KID (unbiased, over subsets), precision and recall (Kynkäänniemi et al., k=3), density and "
            "coverage (Naeem et al., k=5), overall and per class, each beside the same metric between two halves of the real "
            "data (what a perfect generator would score). Writes quality.json and a per-class bar chart."
        ),
        epilog="Example: skinsynth audit quality ./synthetic --real ./ham10000 --features contrastive --out ./audit",
    )
    quality.add_argument("synthetic", metavar="SYN", help="synthetic dataset (folder or Hub id); all its splits are compared")
    quality.add_argument("--real", required=True, metavar="REAL", help="real dataset with the same class names")
    quality.add_argument("--real-split", default="train", help="split of the real dataset to compare with (default: train)")
    quality.add_argument("--out", required=True, metavar="DIR", help="folder for quality.json, the PNG and a cached contrastive encoder")
    quality.add_argument("--features", default="auto", metavar="F", help=FEATURES_HELP)
    quality.add_argument("--seed", type=int, default=0, help="seed of the real halves and of the subsets (default: 0)")
    _common(quality)
    quality.set_defaults(run=run_quality)


def _common(parser) -> None:
    parser.add_argument("--contrastive-steps", type=int, default=ContrastiveConfig.steps, metavar="N", help=f"training steps of the `contrastive` encoder (default: {ContrastiveConfig.steps}; cached in --out)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu for the feature model (default: the best available)")
    parser.add_argument("--update-card", action="store_true", help="also write the report into SYN/reports/ and rebuild SYN's dataset card")


def run_memorization(args) -> None:
    report = audit_memorization(
        args.synthetic, args.train, args.out, features=args.features, threshold=args.threshold, percentile=args.percentile, calibration=args.calibration,
        backend=args.backend, update_card=args.update_card, device=args.device, contrastive=ContrastiveConfig(steps=args.contrastive_steps),
        progress=not args.quiet,
    )
    print(f"{report['num_flagged']} of {report['num_synthetic']} synthetic images ({report['rate']:.1%}) are closer to a training image "
          f"than the threshold {report['threshold']:.3f} ({report['features']} features)")
    print(f"wrote {args.out}/memorization.json and its pictures")


def run_quality(args) -> None:
    report = audit_quality(
        args.synthetic, args.real, args.out, features=args.features, real_split=args.real_split, seed=args.seed,
        update_card=args.update_card, device=args.device, contrastive=ContrastiveConfig(steps=args.contrastive_steps), progress=not args.quiet,
    )
    print(f"{'metric':<10} {'synthetic':>10} {'real-vs-real':>13}   ({report['features']} features, {report['num_compared']} images each)")
    for metric, value in report["overall"].items():
        baseline = report["real_vs_real"][metric]
        print(f"{metric:<10} {_fmt(value):>10} {_fmt(baseline):>13}")
    print(f"wrote {args.out}/quality.json and quality_per_class.png")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
