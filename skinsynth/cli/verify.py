"""`skinsynth verify DATASET`."""

from ..verify import verify_dataset


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check that a dataset folder matches its manifest (shards, rows, sha256)",
        description=(
            "Check DATASET against its manifest: the run is complete, the card (README.md) and sample_grid.png exist, "
            "every shard is a file in data/ with the number of rows and the sha256 the manifest records, and data/ "
            "holds no other shard. Exit code 2 names the first problem. "
            "`skinsynth push` runs the same checks before uploading anything."
        ),
        epilog="Example: skinsynth verify ./demo-output",
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder written by `skinsynth generate` or `skinsynth prepare`")
    parser.set_defaults(run=run)


def run(args) -> None:
    verified = verify_dataset(args.dataset, progress=not args.quiet)
    counts = ", ".join(f"{split}: {rows}" for split, rows in verified.num_rows.items())
    print(f"{args.dataset} is complete and intact ({len(verified.shards)} shards; {counts})")
