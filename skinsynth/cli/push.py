"""`skinsynth push DATASET REPO_ID`."""

from ..hub import SHARDS_PER_COMMIT, push_to_hub


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="publish a dataset folder on the Hugging Face Hub",
        description=(
            "Verify DATASET, create the Hub dataset repo REPO_ID if needed, and upload the shards in several commits, "
            "then the manifest, sample grid, reports and card in a last commit, so the repo never shows a card that "
            "points at missing files. Shards already on the Hub with the same sha256 are skipped: run the same "
            "command again to resume an interrupted push. The token comes from --token, HF_TOKEN or `hf auth login`, "
            "and is never written anywhere."
        ),
        epilog="Example: skinsynth push ./demo-output me/skin-demo --private",
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder written by `skinsynth generate` or `skinsynth prepare`")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub dataset repo, e.g. me/skin-demo")
    parser.add_argument("--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", default=None, metavar="R", help="branch to push to (created from main if missing); with --create-pr, the branch the pull request targets; `refs/pr/N` resumes into an open pull request")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch; all commits of this push go into it")
    parser.add_argument("--token", default=None, help="Hub token with write access (default: HF_TOKEN or the token saved by `hf auth login`)")
    parser.add_argument("--shards-per-commit", type=int, default=SHARDS_PER_COMMIT, metavar="N", help=f"shards per commit (default: {SHARDS_PER_COMMIT})")
    parser.add_argument("--allow-unaudited", action="store_true", help="publish a synthetic dataset that no copy check covers (no `audit memorization --update-card`, no `generate --filter-copies`) or whose audit flags images; recorded in its card")
    parser.set_defaults(run=run)


def run(args) -> None:
    result = push_to_hub(
        args.dataset, args.repo_id, private=args.private, revision=args.revision, create_pr=args.create_pr, token=args.token,
        shards_per_commit=args.shards_per_commit, allow_unaudited=args.allow_unaudited, progress=not args.quiet,
    )
    print(f"pushed {args.dataset} to {result.pr_url or result.url}: {len(result.uploaded)} shards uploaded, {len(result.skipped)} already there, {result.commits} commits")
    print(f"load it with:  from datasets import load_dataset; ds = load_dataset({args.repo_id!r}{f', revision={result.revision!r}' if result.revision else ''})")
