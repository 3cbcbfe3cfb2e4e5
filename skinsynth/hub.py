"""Publish a skinsynth dataset folder on the Hugging Face Hub, so that the repo never shows a broken dataset.

The folder is verified first (manifest complete, every shard present with its rows and sha256). Shards go up in
several commits of at most `shards_per_commit` files; a shard the remote already holds with the same sha256 is
skipped, so a push that was interrupted resumes where it stopped. The manifest, sample grid, reports and the card
go up last, in one commit that also removes stale shards of an earlier push: the card's `configs` only ever point
at files that are there.

The token comes from `token=` or huggingface_hub's usual sources (`HF_TOKEN`, `hf auth login`); it is handed to
`HfApi` and never written anywhere.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .card import CARD_FILE, GRID_FILE, REPORTS, REPORTS_DIR, write_dataset_card
from .errors import HubError
from .privacy import check_publishable
from .shards import DATA_DIR, DUPLICATES_REPORT
from .verify import verify_dataset

logger = logging.getLogger(__name__)

SHARDS_PER_COMMIT = 50  # as `datasets.Dataset.push_to_hub`: commits stay small enough for the Hub to accept


@dataclass
class PushResult:
    """What a push did: where the data went, which shards were uploaded or already there, how many commits."""

    repo_id: str
    revision: str | None
    pr_url: str | None = None
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: int = 0

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo_id}" + (f"/tree/{self.revision}" if self.revision and not self.pr_url else "")


def check_repo_id(repo_id: str) -> None:
    """Fail before any work when `repo_id` cannot be a Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"`{repo_id}` is not a valid Hub repo id (use USER/NAME or ORG/NAME): {err}") from None


def _same_file(remote, local: Path, sha256: str) -> bool:
    """Whether a remote file (from `list_repo_tree`) holds exactly the local shard: LFS sha256, else git blob id."""
    from huggingface_hub.utils.sha import git_hash

    if remote is None or remote.size != local.stat().st_size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256
    return remote.blob_id == git_hash(local.read_bytes())


class _Committer:
    """Commits to one target: a branch, or a pull request opened by the first commit and then reused."""

    def __init__(self, api, repo_id: str, revision: str | None, create_pr: bool):
        self.api = api
        self.repo_id = repo_id
        self.revision = revision
        self.open_pr = create_pr
        self.pr_url: str | None = None
        self.count = 0

    def commit(self, operations: list, message: str) -> None:
        info = self.api.create_commit(
            self.repo_id, operations, commit_message=message, repo_type="dataset", revision=self.revision, create_pr=self.open_pr or None,
        )
        self.count += 1
        if self.open_pr:
            self.open_pr = False
            self.pr_url, self.revision = info.pr_url, info.pr_revision
            logger.info("opened %s", info.pr_url)


def push_to_hub(
    root: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    shards_per_commit: int = SHARDS_PER_COMMIT,
    allow_unaudited: bool = False,
    progress: bool = True,
) -> PushResult:
    """Upload the dataset in `root` to the Hub dataset repo `repo_id` (created if needed). Mirrors `skinsynth push`.

    `revision` is a branch (created from main if missing) or, with `create_pr`, the branch the pull request targets;
    all commits of one push go to the same pull request. Raises `DatasetError` if the folder is incomplete or
    damaged (nothing is uploaded), `PrivacyError` if a synthetic dataset was never checked for copies of its model's
    training images (`privacy.check_publishable`; `allow_unaudited` publishes it anyway, and its card says so),
    `HubError` if the Hub refuses.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
    from huggingface_hub.hf_api import RepoFile

    check_repo_id(repo_id)
    if create_pr and revision is not None and revision.startswith("refs/pr/"):
        raise HubError(f"`--create-pr` opens a new pull request, `--revision {revision}` pushes into an open one: pass only one of them")
    if shards_per_commit < 1:
        raise HubError(f"`shards_per_commit` must be at least 1, got {shards_per_commit}")
    root = Path(root)
    verified = verify_dataset(root, progress=progress)
    check_publishable(root, allow_unaudited=allow_unaudited)
    write_dataset_card(root, repo_id)  # before any request: a card that cannot be built stops the push here
    api = HfApi(token=token)
    committer = _Committer(api, repo_id, revision, create_pr)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision is not None and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset") if isinstance(f, RepoFile)}

        result = PushResult(repo_id, revision)
        pending = []
        for shard in verified.shards:
            done = _same_file(remote.get(shard["file"]), root / shard["file"], shard["sha256"])
            (result.skipped if done else pending).append(shard["file"])
        if result.skipped:
            logger.info("%d of %d shards are already on %s; uploading the other %d", len(result.skipped), len(verified.shards), repo_id, len(pending))

        batches = [pending[i : i + shards_per_commit] for i in range(0, len(pending), shards_per_commit)]
        for number, batch in enumerate(batches, start=1):
            operations = [CommitOperationAdd(path_in_repo=file, path_or_fileobj=str(root / file)) for file in batch]
            committer.commit(operations, f"Upload shards {number}/{len(batches)} ({len(batch)} files)")
            result.uploaded += batch
            logger.info("uploaded shards %d/%d", number, len(batches))

        # Last commit: what describes the shards, and the removal of shards an earlier push left that the card's
        # `data/{split}-*` patterns would otherwise pick up.
        files = [verified.manifest_name, DUPLICATES_REPORT, GRID_FILE, *(f"{REPORTS_DIR}/{name}.json" for name in REPORTS), CARD_FILE]
        operations = [CommitOperationAdd(path_in_repo=file, path_or_fileobj=str(root / file)) for file in files if (root / file).is_file()]
        listed = {shard["file"] for shard in verified.shards}
        patterns = [f"{DATA_DIR}/{split}-*" for split in verified.manifest["splits"]]
        result.deleted = sorted(path for path in remote if path not in listed and any(fnmatch.fnmatch(path, p) for p in patterns))
        operations += [CommitOperationDelete(path_in_repo=path) for path in result.deleted]
        committer.commit(operations, f"Dataset card and {verified.manifest_name}")
    except (HfHubHTTPError, LocalTokenNotFoundError, ConnectionError) as err:  # refused, not logged in, offline
        again = f"push again with `--revision {committer.revision}` to resume into {committer.pr_url}" if committer.pr_url else "run the same push again to resume"
        raise HubError(f"pushing to `{repo_id}` failed: {err}. Check that you are logged in (`hf auth login`, HF_TOKEN or --token) with write access; {again}.") from err
    result.revision, result.pr_url, result.commits = committer.revision, committer.pr_url, committer.count
    return result
