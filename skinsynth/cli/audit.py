"""`skinsynth audit fidelity SYN --classifier DIR …`, `audit memorization SYN --train REAL …` and `audit quality SYN --real REAL …`."""

from ..audit.features import ContrastiveConfig
from ..audit.fidelity import audit_fidelity
from ..audit.memorization import audit_memorization
from ..audit.quality import audit_quality

FEATURES_HELP = (
    "feature space: `dinov2-vitl14[:DIR]` (FD-DINOv2's ViT-L/14 with its published preprocessing), `inception-v3` (FID's "
    "network, torchvision weights; needs torchvision), a Hub id or folder of a transformers vision model, `classifier:DIR` "
    "(the penultimate layer of a model `skinsynth benchmark` saved in BENCH/models/ARM/seedN), or `contrastive` (a small "
    "encoder trained here on real images; no download). Default `auto`: DINOv2 if the Hub is reachable, else contrastive"
)
MEMORIZATION_FEATURES_HELP = (
    "how an image is compared with the training images. Default `keypoints`: the number of SIFT keypoints it shares with "
    "one training image under a single rotation/scale/shift (RANSAC inliers); catches copies under any crop, flip, rotation, "
    "colour change and JPEG, with no download. Or any feature space of `audit quality` (`auto`, `dinov2-vitl14`, a Hub id, "
    "`classifier:DIR`, `contrastive`), compared by cosine similarity, which can also catch look-alikes with other textures "
    "when the space is good enough: the planted-copy recall in the report says whether it is"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="audit a synthetic dataset: label fidelity, memorized training images, distribution quality",
        description="Audits of a synthetic dataset against real data. Each writes a JSON report and pictures into --out; "
        "--update-card also puts the report into the dataset's card.",
    )
    audits = parser.add_subparsers(dest="audit", metavar="AUDIT", required=True)

    fidelity = audits.add_parser(
        "fidelity",
        help="measure whether real-trained classifiers see the class each image was generated for",
        description=(
            "Classifiers trained on real images (the benchmark's BENCH/models/real-500, its seeds averaged, or any transformers "
            "image classifier) predict the class of every synthetic image: per-class recall and balanced accuracy against the "
            "prompted class (the GAN-test of Shmelkov et al. 2018), beside the same classifiers on the real test split (the ceiling) "
            "and on the real test images passed through the generator's autoencoder (what its latent space can carry). With the "
            "generating model (--model, default: the local folder generation.json names), it also draws every class from the same "
            "--seeds seeds and reports how often the prediction follows the prompted class rather than the seed, with a grid "
            "(rows: classes, columns: shared seeds). Minutes on a CPU: fast enough to steer experiments by. Writes fidelity.json, "
            "fidelity.md and fidelity_grid.png."
        ),
        epilog="Example: skinsynth audit fidelity ./synthetic --classifier ./bench/models/real-500 --real ./ham10000 --out ./audit-fidelity",
    )
    fidelity.add_argument("synthetic", metavar="SYN", help="synthetic dataset (folder or Hub id); all its splits are classified")
    fidelity.add_argument("--classifier", required=True, nargs="+", metavar="DIR", help="classifier folder(s) or Hub id(s); a folder of model folders (BENCH/models/ARM) is an ensemble")
    fidelity.add_argument("--real", default=None, metavar="REAL", help="real dataset with the same class names: its --real-split is the ceiling, and is autoencoded by --model")
    fidelity.add_argument("--real-split", default="test", help="split of --real (default: test)")
    fidelity.add_argument("--model", default=None, metavar="M", help="the generating pipeline, for the reconstructions and the shared-seed grid (default: the local folder in SYN/generation.json)")
    fidelity.add_argument("--seeds", type=int, default=8, metavar="N", help="shared seeds per class for the grid and prompt following (default: 8; 0: none)")
    fidelity.add_argument("--out", required=True, metavar="DIR", help="folder for fidelity.json, fidelity.md and fidelity_grid.png")
    fidelity.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    fidelity.add_argument("--update-card", action="store_true", help="also write the report into SYN/reports/ and rebuild SYN's dataset card")
    fidelity.set_defaults(run=run_fidelity)

    memorization = audits.add_parser(
        "memorization",
        help="find synthetic images that copy a real training image",
        description=(
            "Find every synthetic image's nearest real training image and flag it when their score (matched keypoints, or "
            "cosine similarity in a feature space) is above the copy threshold. The audit checks itself on real images the generator never saw "
            "(the real test split, else validation: new lesions): half of them set the threshold so that a new patient's image "
            "is flagged at most --false-positive-rate of the time, the other half measure that rate (with a 95% CI). The "
            "headline is the excess: the synthetic share above the threshold minus the held-out real share, with a 95% CI "
            "and a one-sided test. Every run also plants altered copies of training images (crop, flip, rotation, colour "
            "jitter, JPEG; light and heavy) and reports the share it catches. Writes memorization.json (flagged rows with "
            "their nearest training row and lesion group), a histogram against the held-out baseline, and the closest pairs."
        ),
        epilog="Example: skinsynth audit memorization ./synthetic --train ./ham10000 --out ./audit",
    )
    memorization.add_argument("synthetic", metavar="SYN", help="synthetic dataset (folder or Hub id); all its splits are audited")
    memorization.add_argument("--train", required=True, metavar="REAL", help="real dataset the generator was trained on (its train split is searched; its test or validation split calibrates the threshold)")
    memorization.add_argument("--out", required=True, metavar="DIR", help="folder for memorization.json, the PNGs and a cached contrastive encoder")
    memorization.add_argument("--features", default="keypoints", metavar="F", help=MEMORIZATION_FEATURES_HELP)
    memorization.add_argument("--false-positive-rate", type=float, default=0.01, metavar="A", help="nominal share of new patients' images flagged; sets the threshold (default: 0.01)")
    memorization.add_argument("--threshold", type=float, default=None, metavar="X", help="fixed score threshold instead of the calibrated one (matched keypoints, or a cosine similarity: SSCD uses 0.5); its false-positive rate is still measured")
    memorization.add_argument("--heldout-split", default=None, metavar="SPLIT", help="real split of images the generator never saw, for the threshold and its false-positive rate (default: test, else validation)")
    memorization.add_argument("--planted", type=int, default=200, metavar="N", help="training images planted as altered copies (per strength) to measure the audit's recall (default: 200; 0: none)")
    memorization.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch", "faiss"], help="exact search backend for embedding features (default: torch on a GPU --device, numpy on the CPU; faiss if installed)")
    _common(memorization)
    memorization.set_defaults(run=run_memorization)

    quality = audits.add_parser(
        "quality",
        help="measure how close the synthetic distribution is to the real one",
        description=(
            "Fréchet distance and KID (unbiased, over subsets) on raw features, as published (FD-DINOv2 with --features "
            "dinov2-vitl14, FID with inception-v3), precision and recall (Kynkäänniemi et al., k=3), density and coverage "
            "(Naeem et al., k=5), overall and per class, each beside the same metric between two halves of the real data split "
            "by class and lesion group (what a perfect generator would score). With contrastive features a third of the real "
            "rows trains the encoder and is in neither half. Writes quality.json (with the rows of each part and what each "
            "number means) and a per-class bar chart."
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


def run_fidelity(args) -> None:
    report = audit_fidelity(
        args.synthetic, args.classifier, args.out, real=args.real, real_split=args.real_split, model=args.model, seeds=args.seeds,
        update_card=args.update_card, device=args.device, progress=not args.quiet,
    )
    for key, title in (("synthetic_fidelity", "synthetic, prompted class"), ("real_fidelity", "real test (ceiling)"), ("reconstruction_fidelity", "real test, autoencoded")):
        if key in report:
            print(f"{title:<26} balanced accuracy {report[key]['balanced_accuracy']:.3f}  top-1 {report[key]['top1']:.3f}  ({report[key]['n']} images)")
    if "shared_seeds" in report:
        shared = report["shared_seeds"]
        print(f"shared seeds: prompt following {shared['prompt_following']:.2f}, seed following {shared['seed_following']:.2f} ({shared['num_seeds']} seeds per class)")
    print(f"wrote {args.out}/fidelity.json, fidelity.md" + (", fidelity_grid.png" if "shared_seeds" in report else ""))


def run_memorization(args) -> None:
    report = audit_memorization(
        args.synthetic, args.train, args.out, features=args.features, false_positive_rate=args.false_positive_rate, threshold=args.threshold,
        heldout_split=args.heldout_split, num_planted=args.planted, backend=args.backend, update_card=args.update_card, device=args.device,
        contrastive=ContrastiveConfig(steps=args.contrastive_steps), progress=not args.quiet,
    )
    fpr = report["false_positive_rate"]
    print(f"threshold {report['threshold']:.4g} ({report['features']}): measured false-positive rate {_share(fpr)} on held-out real images")
    for strength, recall in report["planted_copy_recall"].items():
        print(f"planted-copy recall ({strength} alterations): {_share(recall)}")
    print(report["verdict"])
    if report["heldout_flagged"]:
        top = report["heldout_flagged"][0]
        print(f"{len(report['heldout_flagged'])} held-out real images score above the threshold too (highest {top['similarity']:.4g}: `{report['heldout_split']}` "
              f"row {top['row']}, group {top['group']}, against train row {top['nearest_train_row']}, group {top['nearest_group']}). If a pair shows one "
              "lesion, the real splits share it under two ids; such pairs also raise the threshold and lower the recall (memorization.json lists them)")
    print(f"wrote {args.out}/memorization.json and its pictures")


def _share(share: dict) -> str:
    return f"{share['value']:.1%} (95% CI {share['ci95'][0]:.1%}-{share['ci95'][1]:.1%}, {share['count']}/{share['n']})"


def run_quality(args) -> None:
    report = audit_quality(
        args.synthetic, args.real, args.out, features=args.features, real_split=args.real_split, seed=args.seed,
        update_card=args.update_card, device=args.device, contrastive=ContrastiveConfig(steps=args.contrastive_steps), progress=not args.quiet,
    )
    print(f"{'metric':<10} {'synthetic':>10} {'real-vs-real':>13}   ({report['features']} features, {report['num_compared']} images each)")
    for metric, value in report["overall"].items():
        baseline = report["real_vs_real"][metric]
        print(f"{metric:<10} {_fmt(value):>10} {_fmt(baseline):>13}")
    print("real-vs-real: two disjoint halves of the real images, what a perfect generator would score; fd and kid on raw features")
    print(f"wrote {args.out}/quality.json and quality_per_class.png")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
