"""`skinsynth prepare SOURCE --format ham10000|imagefolder|csv --out DIR`; `prepare A B … --format skinsynth` combines."""

import argparse

from ..errors import SkinsynthError
from ..prepare import PrepareConfig, parse_size, prepare
from ..sources import FORMATS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="convert a real dataset (HAM10000, ImageFolder, CSV) into the skinsynth layout with leak-free splits, or combine converted ones",
        description=(
            "Convert a real image dataset into the layout `generate` writes (data/{split}-…arrow shards and a "
            "prepare.json manifest), with the same label names and attribute columns as synthetic datasets, so that "
            "`benchmark` and `finetune` read both alike. Splits are stratified by label and grouped by lesion or "
            "patient (`group_id`): no group is in two splits. Images keep their original bytes unless they must be "
            "converted to RGB or resized; corrupt, missing and unlabeled images are skipped and counted by reason. "
            "Exact copies (same decoded pixels) and near copies (resized, re-encoded) are found and put in one group; "
            "copies with different labels are dropped (--conflicts), copies across the source's own train/test split are "
            "reported (--cross-split); the file names go to duplicates.json. `--format skinsynth A B …` combines datasets "
            "converted this way into one: rows keep their dataset in a `source` column, copies across them are found, "
            "and the combined rows are split again, grouped."
        ),
        epilog=(
            "Examples:\n"
            "  skinsynth prepare ~/data/HAM10000 --format ham10000 --out ./ham10000\n"
            "  skinsynth prepare ./my_images --format imagefolder --max-size 512 --out ./mine\n"
            "  skinsynth prepare ~/data/pad-ufes-20 --format csv --mapping dataset_scripts/mappings/pad_ufes_20.yaml --out ./pad\n"
            "  skinsynth prepare ./table.csv --format csv --image-column file --label-column dx --group-column patient \\\n"
            "      --attribute body_site=site --out ./table\n"
            "  skinsynth prepare ./ham10000 ./isic2019 --format skinsynth --out ./ham-isic"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE", nargs="+", help="the dataset as downloaded: a folder (or, for csv, the table file); for skinsynth, two or more `prepare` outputs")
    parser.add_argument("--format", required=True, choices=FORMATS, help="ham10000: images + HAM10000_metadata.csv; imagefolder: SOURCE/[train|test/]CLASS/IMAGE; csv: a table + a column mapping; skinsynth: combine `prepare` outputs")
    parser.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (must be absent or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the new dataset is complete)")

    splits = parser.add_argument_group("splits")
    splits.add_argument("--validation", type=float, default=0.1, metavar="FRACTION", help="share of images in validation (default: 0.1)")
    splits.add_argument("--test", type=float, default=0.1, metavar="FRACTION", help="share of images in test (default: 0.1); train gets the rest")
    splits.add_argument("--seed", type=int, default=0, help="seed of the split and of the per-class cap (default: 0)")
    splits.add_argument("--per-class-cap", type=int, default=None, metavar="N", help="keep at most N images per class (whole groups, chosen by --seed)")
    splits.add_argument("--classes", default=None, metavar="A,B,…",
                        help="classes that must have images (an error names those without); by default a class the source names but has no image of is reported as absent and left out")

    dedup = parser.add_argument_group("duplicates")
    dedup.add_argument("--no-dedup", dest="dedup", action="store_false", help="skip duplicate detection (it decodes every image at 256 pixels a side or more)")
    dedup.add_argument("--conflicts", choices=("drop", "majority", "keep"), default="drop",
                       help="copies of one image with different labels: drop them all (default), keep those with the majority label, or keep all")
    dedup.add_argument("--cross-split", choices=("report", "drop-train"), default="report",
                       help="copies in more than one of the splits the source fixed (train/test folders): report them (default) or drop the train side")

    images = parser.add_argument_group("images")
    size = images.add_mutually_exclusive_group()
    size.add_argument("--resize", default=None, metavar="WxH", help="resize every image to exactly WxH (e.g. 512x512); default: keep the original bytes")
    size.add_argument("--max-size", type=int, default=None, metavar="N", help="shrink images whose longer side exceeds N, keeping the aspect ratio")
    images.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded JPEG images (default: 95)")
    images.add_argument("--shard-size", type=int, default=1000, metavar="N", help="images per Arrow shard (default: 1000)")
    images.add_argument("--workers", type=int, default=None, metavar="N", help="threads that read, check and convert images (default: one per CPU core)")

    table = parser.add_argument_group("csv columns (or all of them in --mapping FILE)")
    table.add_argument("--mapping", default=None, metavar="FILE", help="YAML column mapping; ready ones for Fitzpatrick17k, DDI, PAD-UFES-20 and SCIN are in dataset_scripts/mappings/")
    table.add_argument("--image-column", default=None, metavar="COLUMN", help="column holding the image path (relative to the table's folder, or to --image-dir)")
    table.add_argument("--label-column", default=None, metavar="COLUMN", help="column holding the label (class names become snake_case)")
    table.add_argument("--group-column", default=None, metavar="COLUMN", help="column holding the lesion or patient id; without it each image is its own group")
    table.add_argument("--attribute", action="append", default=[], metavar="NAME=COLUMN", help="an attribute column, e.g. body_site=localization; repeatable")
    table.add_argument("--image-dir", default=None, metavar="DIR", help="folder the image paths are relative to (relative to the table's folder)")
    parser.set_defaults(run=run)


def mapping_from_args(args):
    """The --mapping file, or a mapping made of the column options; None when neither is given."""
    columns = [args.image_column, args.label_column, args.group_column, args.image_dir, *args.attribute]
    if args.mapping is not None:
        if any(columns):
            raise SkinsynthError("give either --mapping or the column options (--image-column, --label-column…), not both")
        return args.mapping
    if not any(columns):
        return None
    attributes = {}
    for item in args.attribute:
        name, sep, column = item.partition("=")
        if not sep or not name or not column:
            raise SkinsynthError(f"`--attribute` must look like NAME=COLUMN (e.g. body_site=localization), got {item!r}")
        attributes[name] = {"column": column}
    mapping = {"images": args.image_dir, "attributes": attributes}
    if args.image_column:
        mapping["image"] = {"column": args.image_column}
    if args.label_column:
        mapping["label"] = {"column": args.label_column}
    if args.group_column:
        mapping["group_id"] = {"column": args.group_column}
    return mapping


def run(args) -> None:
    config = PrepareConfig(
        validation=args.validation, test=args.test, seed=args.seed, resize=parse_size(args.resize) if args.resize else None,
        max_size=args.max_size, per_class_cap=args.per_class_cap, shard_size=args.shard_size, quality=args.quality, workers=args.workers,
        dedup=args.dedup, conflicts=args.conflicts, cross_split=args.cross_split,
        classes=tuple(name.strip() for name in args.classes.split(",") if name.strip()) if args.classes else None,
    )
    if len(args.source) > 1 and args.format != "skinsynth":
        raise SkinsynthError(f"`--format {args.format}` reads one SOURCE, got {len(args.source)}; only `--format skinsynth` combines several")
    source = args.source if args.format == "skinsynth" else args.source[0]
    manifest = prepare(source, args.format, args.out, mapping=mapping_from_args(args), config=config, overwrite=args.overwrite, progress=not args.quiet)
    counts = ", ".join(f"{split}: {info['num_rows']}" for split, info in manifest["splits"].items())
    size = sum(info["num_bytes"] for info in manifest["splits"].values()) / 1e6
    print(f"wrote {args.out} ({counts}; {len(manifest['label_names'])} classes, {size:.1f} MB) in {manifest['seconds']:.1f} s")
    if manifest["absent_classes"]:
        print(f"absent (named by the source, no image): {', '.join(manifest['absent_classes'])}")
    for title, key in (("skipped", "skipped"), ("converted to RGB or resized", "converted")):
        if manifest[key]:
            print(f"{title}: " + ", ".join(f"{reason}: {n}" for reason, n in manifest[key].items()))
    found = manifest["duplicates"]
    if found and found["clusters"]:
        print(f"duplicates: {found['exact_copies']} exact and {found['near_copies']} near copies in {found['clusters']} sets, one group_id each; "
              f"{found['conflicting']['clusters']} sets with different labels ({found['conflicting']['dropped']} images dropped); "
              f"{found['cross_split']['clusters']} sets across the source's splits; file names in {args.out}/{found['report']}")
    print(f"load it with:  from datasets import load_dataset; ds = load_dataset({str(args.out)!r})")
