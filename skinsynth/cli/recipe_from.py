"""`skinsynth recipe-from DATASET --out RECIPE.yaml`."""

from ..plan import joint_fit
from ..recipe_from import recipe_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "recipe-from",
        help="write the recipe of a synthetic twin of a real dataset (same classes and attribute mix)",
        description=(
            "Count the classes and attribute values of a dataset's train split (a `skinsynth prepare` output or a Hub "
            "dataset) and write a generation recipe with the same classes, class proportions and attribute "
            "frequencies (overall and per class, so the class x attribute tables match too; ages in decades), and prompt "
            "templates that use those attributes. It prints how far the planned train split's class x attribute tables "
            "are from the real ones (total-variation distance) beside the distance sampling noise alone would give. "
            "Edit it, then `skinsynth generate` it."
        ),
        epilog="Example: skinsynth recipe-from ./ham10000 --out ham10000-twin.yaml --total 2000 --size 512",
    )
    parser.add_argument("dataset", metavar="DATASET", help="local dataset folder or Hub dataset id")
    parser.add_argument("--out", required=True, metavar="RECIPE.yaml", help="recipe file to write")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--total", type=int, default=None, metavar="N", help="synthetic train images in all, in the real class proportions (default: as many as the real train split)")
    count.add_argument("--per-class", type=int, default=None, metavar="N", help="N synthetic train images for every class (a balanced twin)")
    parser.add_argument("--size", type=int, default=512, help="generated image width and height in pixels (default: 512)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps per generated image (default: 30)")
    parser.add_argument("--guidance-scale", type=float, default=7.5, metavar="F", help="classifier-free guidance (default: 7.5; 2-3 for small models trained from scratch)")
    parser.add_argument("--split", default="train", help="split to count (default: train)")
    parser.add_argument("--attributes", nargs="+", default=None, metavar="COLUMN", help="attribute columns (default: those the dataset's manifest declares)")
    parser.add_argument("--template", action="append", default=None, metavar="TEXT", help="prompt template using {class} and attribute names, e.g. 'a dermoscopic image of {class} on the {body_site}'; repeatable (default: two that name every attribute)")
    parser.add_argument(
        "--class-free-negative", action="store_true",
        help="guide each image against its own prompt without the class, so guidance strengthens the class alone (for models trained with `finetune --class-dropout`)",
    )
    parser.add_argument("--name", default=None, help="recipe name (default: DATASET-synthetic)")
    parser.add_argument("--revision", default=None, help="Hub revision of DATASET")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(run=run)


def run(args) -> None:
    recipe = recipe_from(
        args.dataset, args.out, split=args.split, per_class=args.per_class, total=args.total, size=args.size, steps=args.steps, guidance_scale=args.guidance_scale,
        attributes=args.attributes, templates=args.template, class_free_negative=args.class_free_negative, name=args.name, revision=args.revision, overwrite=args.overwrite,
    )
    counts = ", ".join(f"{split}: {sum(recipe.class_counts(split))}" for split in recipe.splits)
    print(f"wrote {args.out}: {len(recipe.classes)} classes, attributes {', '.join(recipe.attributes) or 'none'} ({counts} images)")
    for attribute, fit in joint_fit(recipe, "train").items():
        print(f"planned class x {attribute} table: total-variation distance {fit['distance']:.4f} from the real one "
              f"(sampling noise at {fit['images']} images: {fit['noise']:.4f})")
    print(f"generate it with:  skinsynth generate {args.out} --model MODEL --out DIR")
