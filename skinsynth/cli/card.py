"""`skinsynth card DATASET [--repo-id ID]`."""

from ..card import write_dataset_card


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "card",
        help="rebuild a dataset's card (README.md) and sample grid",
        description=(
            "Rebuild DATASET/README.md, the Hugging Face dataset card, from the manifest (generation.json or "
            "prepare.json), the data (class and attribute counts, sample_grid.png) and the reports in "
            "DATASET/reports/ (benchmark, fidelity, memorization, quality). `generate` writes the card itself; run this after "
            "adding a report or to put the Hub id in the loading snippet. The same folder always gives the same card."
        ),
        epilog="Example: skinsynth card ./demo-output --repo-id me/skin-demo",
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder written by `skinsynth generate` or `skinsynth prepare`")
    parser.add_argument("--repo-id", default=None, help="Hub id the dataset is (or will be) published under, for the card's load_dataset snippet")
    parser.set_defaults(run=run)


def run(args) -> None:
    path = write_dataset_card(args.dataset, repo_id=args.repo_id)
    print(f"wrote {path} and {path.with_name('sample_grid.png')}")
