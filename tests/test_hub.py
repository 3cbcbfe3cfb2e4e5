"""`verify` and `push`: damaged datasets are refused naming the shard; pushes go up shard by shard, card last, resume
after an interruption, keep to one pull request, and never write the token anywhere.

The Hub is replaced at the network boundary: `FakeHub` answers the `HfApi` methods that make HTTP calls
(create_repo, create_branch, list_repo_tree, create_commit) from an in-memory repo and records every call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import CommitInfo, RepoFile, RepoFolder

from skinsynth.cli import main
from skinsynth.errors import DatasetError, HubError
from skinsynth.generate import generate
from skinsynth.hub import push_to_hub
from skinsynth.shards import atomic_write_json
from skinsynth.verify import verify_dataset

from .conftest import DEMO_RECIPE

SECRET = "hf_skinsynthTestTokenThatMustNeverBeWritten"


class ServerError(HfHubHTTPError):
    """The Hub's HTTP error without an HTTP response object: huggingface_hub's HTTP client (requests, httpx…) depends
    on its version, and the test must not import it."""

    def __init__(self, message: str):
        Exception.__init__(self, message)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    """The demo recipe with 2 images per shard, so 4 images per split make several shards."""
    recipe = yaml.safe_load(DEMO_RECIPE.read_text())
    recipe["generation"]["shard_size"] = 2
    path = tmp_path_factory.mktemp("recipe") / "demo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def generated(tiny_pipeline_dir, recipe_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "demo"
    generate(recipe_file, str(tiny_pipeline_dir), out, limit=4, batch_size=2, progress=False)
    return out


@pytest.fixture
def dataset(generated, tmp_path) -> Path:
    return Path(shutil.copytree(generated, tmp_path / "demo"))


def shard_files(root: Path) -> list[str]:
    manifest = json.loads((root / "generation.json").read_text())
    return [shard["file"] for split in manifest["splits"].values() for shard in split["shards"]]


# ---------------------------------------------------------------- verify


def test_verify_accepts_a_complete_dataset(dataset, capsys):
    verified = verify_dataset(dataset)
    assert verified.num_rows == {"train": 4, "validation": 4}
    assert len(verified.shards) == 4
    assert main(["verify", str(dataset)]) == 0
    assert "complete and intact (4 shards; train: 4, validation: 4)" in capsys.readouterr().out


def test_verify_names_a_missing_shard(dataset, capsys):
    (dataset / "data" / "validation-00001-of-00002.arrow").unlink()
    with pytest.raises(DatasetError, match=r"shard `data/validation-00001-of-00002.arrow` is missing"):
        verify_dataset(dataset)
    assert main(["verify", str(dataset)]) == 2
    assert "error: shard `data/validation-00001-of-00002.arrow` is missing" in capsys.readouterr().err


def test_verify_names_a_shard_with_other_rows(dataset):
    manifest = json.loads((dataset / "generation.json").read_text())
    manifest["splits"]["train"]["shards"][1]["num_rows"] = 3
    manifest["splits"]["train"]["num_rows"] = 5
    atomic_write_json(dataset / "generation.json", manifest)
    with pytest.raises(DatasetError, match=r"shard `data/train-00001-of-00002.arrow` has 2 rows, the manifest says 3"):
        verify_dataset(dataset)


def test_verify_names_a_shard_with_other_bytes(dataset):
    path = dataset / "data" / "train-00000-of-00002.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside an image: the file still parses, with the same size and rows
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"shard `data/train-00000-of-00002.arrow` has sha256 [0-9a-f]{64}, the manifest says"):
        verify_dataset(dataset)


def test_verify_names_a_truncated_shard_and_an_unlisted_one(dataset):
    path = dataset / "data" / "train-00000-of-00002.arrow"
    original = path.read_bytes()
    path.write_bytes(original[:-100])
    with pytest.raises(DatasetError, match=r"shard `data/train-00000-of-00002.arrow` has \d+ bytes"):
        verify_dataset(dataset)
    path.write_bytes(original)
    shutil.copyfile(path, dataset / "data" / "train-00000-of-00003.arrow")
    with pytest.raises(DatasetError, match=r"`data/train-00000-of-00003.arrow` is not in generation.json"):
        verify_dataset(dataset)


def test_verify_refuses_an_unfinished_run(dataset):
    manifest = json.loads((dataset / "generation.json").read_text())
    manifest["status"] = "incomplete"
    atomic_write_json(dataset / "generation.json", manifest)
    with pytest.raises(DatasetError, match="incomplete"):
        verify_dataset(dataset)


# ---------------------------------------------------------------- push


class FakeHub:
    """In-memory stand-in for the Hub's HTTP API, patched onto `HfApi`; records calls and the tokens they carried."""

    def __init__(self, fail_on_commit: int | None = None):
        self.refs: dict[str, dict[str, dict]] = {"main": {".gitattributes": {"sha256": None, "size": 10, "data": b"*.arrow lfs\n"}}}
        self.commits: list[dict] = []
        self.calls: list[str] = []
        self.tokens: set = set()
        self.fail_on_commit = fail_on_commit
        self.repos: dict[str, dict] = {}

    def install(self, monkeypatch) -> FakeHub:
        hub = self

        def create_repo(api, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
            hub._call(api, "create_repo")
            hub.repos.setdefault(repo_id, {"repo_type": repo_type, "private": private})

        def create_branch(api, repo_id, *, branch, repo_type=None, exist_ok=False, **kwargs):
            hub._call(api, "create_branch")
            hub.refs.setdefault(branch, dict(hub.refs["main"]))

        def list_repo_tree(api, repo_id, path_in_repo=None, *, recursive=False, revision=None, repo_type=None, **kwargs):
            hub._call(api, "list_repo_tree")
            assert recursive and repo_type == "dataset"
            files = hub.refs[revision or "main"]
            folders = sorted({path.rsplit("/", 1)[0] for path in files if "/" in path})
            yield from (RepoFolder(path=folder, oid="tree") for folder in folders)
            for path, entry in sorted(files.items()):
                lfs = {"size": entry["size"], "oid": entry["sha256"], "pointerSize": 130} if entry["sha256"] else None
                yield RepoFile(path=path, size=entry["size"], oid="blob", lfs=lfs)

        def create_commit(api, repo_id, operations, *, commit_message, repo_type=None, revision=None, create_pr=None, **kwargs):
            hub._call(api, "create_commit")
            assert repo_type == "dataset"
            if hub.fail_on_commit == len(hub.commits) + 1:
                hub.fail_on_commit = None
                raise ServerError("503 Service Unavailable (fake)")
            operations = list(operations)
            base = revision or "main"
            target = f"refs/pr/{sum(ref.startswith('refs/pr/') for ref in hub.refs) + 1}" if create_pr else base
            files = dict(hub.refs[base])
            for op in operations:
                if isinstance(op, CommitOperationAdd):
                    files[op.path_in_repo] = {"sha256": op.upload_info.sha256.hex(), "size": op.upload_info.size, "data": Path(op.path_or_fileobj).read_bytes()}
                else:
                    assert isinstance(op, CommitOperationDelete)
                    del files[op.path_in_repo]
            hub.refs[target] = files
            hub.commits.append({"revision": revision, "create_pr": create_pr, "target": target, "message": commit_message,
                                "added": [op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)],
                                "deleted": [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]})
            pr_url = f"https://huggingface.co/datasets/{repo_id}/discussions/{target.rsplit('/', 1)[1]}" if create_pr else None
            return CommitInfo(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{len(hub.commits):040d}", commit_message=commit_message,
                              commit_description="", oid=f"{len(hub.commits):040d}", pr_url=pr_url)

        for name, method in [("create_repo", create_repo), ("create_branch", create_branch), ("list_repo_tree", list_repo_tree), ("create_commit", create_commit)]:
            monkeypatch.setattr(HfApi, name, method)
        return self

    def _call(self, api, name):
        self.calls.append(name)
        self.tokens.add(api.token)

    @property
    def uploaded(self) -> list[str]:
        return [path for commit in self.commits for path in commit["added"]]


def test_push_uploads_shards_in_commits_then_the_card(dataset, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    result = push_to_hub(dataset, "me/demo", private=True, shards_per_commit=3, progress=False)
    shards = shard_files(dataset)
    assert hub.repos == {"me/demo": {"repo_type": "dataset", "private": True}}
    assert [commit["added"] for commit in hub.commits] == [shards[:3], shards[3:], ["generation.json", "sample_grid.png", "README.md"]]
    assert result.uploaded == shards and result.skipped == [] and result.commits == 3
    assert hub.calls[:2] == ["create_repo", "list_repo_tree"]
    remote = hub.refs["main"]
    card = DatasetCard(remote["README.md"]["data"].decode())
    for entry in card.data.configs[0]["data_files"]:  # every pattern of the pushed card matches pushed shards
        prefix = entry["path"].rstrip("*")
        assert sorted(p for p in remote if p.startswith(prefix)) == [s for s in shards if s.startswith(prefix)]
    assert 'load_dataset("me/demo")' in card.text
    for path in [*shards, "generation.json", "sample_grid.png", "README.md"]:
        assert remote[path]["data"] == (dataset / path).read_bytes()


def test_push_includes_reports_and_removes_stale_shards(dataset, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    hub.refs["main"]["data/train-00000-of-00005.arrow"] = {"sha256": "0" * 64, "size": 3, "data": b"old"}
    hub.refs["main"]["data/other-notes.txt"] = {"sha256": None, "size": 3, "data": b"mine"}
    (dataset / "reports").mkdir()
    atomic_write_json(dataset / "reports" / "quality.json", {"features": "inception", "overall": {"fid": 1.0}, "real_vs_real": {}, "per_class": {}})
    result = push_to_hub(dataset, "me/demo", progress=False)
    last = hub.commits[-1]
    assert last["added"] == ["generation.json", "sample_grid.png", "reports/quality.json", "README.md"]
    assert last["deleted"] == result.deleted == ["data/train-00000-of-00005.arrow"]
    assert "data/other-notes.txt" in hub.refs["main"]
    assert "## Image quality" in hub.refs["main"]["README.md"]["data"].decode()


def test_interrupted_push_resumes_without_reuploading(dataset, monkeypatch, capsys):
    hub = FakeHub(fail_on_commit=2).install(monkeypatch)
    shards = shard_files(dataset)
    with pytest.raises(HubError, match=r"pushing to `me/demo` failed: 503 .*run the same push again to resume"):
        push_to_hub(dataset, "me/demo", shards_per_commit=1, progress=False)
    assert hub.uploaded == shards[:1]
    assert "README.md" not in hub.refs["main"]  # no card until every shard is up

    assert main(["push", str(dataset), "me/demo", "--shards-per-commit", "1"]) == 0
    assert "3 shards uploaded, 1 already there, 4 commits" in capsys.readouterr().out
    assert hub.uploaded == shards + ["generation.json", "sample_grid.png", "README.md"]  # each shard went up once

    commits = len(hub.commits)
    result = push_to_hub(dataset, "me/demo", progress=False)
    assert result.skipped == shards and result.uploaded == [] and len(hub.commits) == commits + 1  # only the card commit


def test_push_refuses_a_damaged_dataset_before_any_request(dataset, monkeypatch, capsys):
    hub = FakeHub().install(monkeypatch)
    (dataset / "data" / "train-00001-of-00002.arrow").unlink()
    assert main(["push", str(dataset), "me/demo"]) == 2
    assert "error: shard `data/train-00001-of-00002.arrow` is missing" in capsys.readouterr().err
    assert hub.calls == []
    with pytest.raises(HubError, match="not a valid Hub repo id"):
        push_to_hub(dataset, "not a repo id!")


def test_push_stops_before_any_request_when_the_card_cannot_be_built(dataset, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    (dataset / "reports").mkdir()
    (dataset / "reports" / "benchmark.json").write_text("{truncated")
    with pytest.raises(DatasetError, match="benchmark.json"):
        push_to_hub(dataset, "me/demo", progress=False)
    assert hub.calls == []


def test_create_pr_puts_every_commit_in_one_pull_request(dataset, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    result = push_to_hub(dataset, "me/demo", create_pr=True, shards_per_commit=2, progress=False)
    assert [(c["revision"], c["create_pr"], c["target"]) for c in hub.commits] == [(None, True, "refs/pr/1"), ("refs/pr/1", None, "refs/pr/1"), ("refs/pr/1", None, "refs/pr/1")]
    assert result.pr_url == "https://huggingface.co/datasets/me/demo/discussions/1" and result.revision == "refs/pr/1"
    assert "README.md" not in hub.refs["main"] and "README.md" in hub.refs["refs/pr/1"]

    commits = len(hub.commits)
    push_to_hub(dataset, "me/demo", revision="refs/pr/1", progress=False)  # resuming into the open pull request
    assert len(hub.commits) == commits + 1 and hub.commits[-1]["revision"] == "refs/pr/1" and hub.commits[-1]["create_pr"] is None
    with pytest.raises(HubError, match="pass only one of them"):
        push_to_hub(dataset, "me/demo", revision="refs/pr/1", create_pr=True)


def test_push_to_a_branch_creates_it(dataset, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    push_to_hub(dataset, "me/demo", revision="v2", progress=False)
    assert "create_branch" in hub.calls and {c["revision"] for c in hub.commits} == {"v2"}
    assert "README.md" in hub.refs["v2"] and "README.md" not in hub.refs["main"]


def test_token_is_used_but_never_written(dataset, monkeypatch, tmp_path, capsys, caplog):
    hf_home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = FakeHub().install(monkeypatch)
    assert main(["push", str(dataset), "me/demo", "--token", SECRET]) == 0
    assert hub.tokens == {SECRET}
    written = [p for root in (dataset, hf_home, tmp_path) if root.exists() for p in root.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert not [c for c in hub.commits for path in c["added"] if SECRET.encode() in hub.refs["main"][path]["data"]]
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text


def test_generate_push_to_hub(generated, recipe_file, tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    hub = FakeHub().install(monkeypatch)
    out = Path(shutil.copytree(generated, tmp_path / "demo"))  # finished run: generate only finalizes, writes the card and pushes
    code = main(["-q", "generate", str(recipe_file), "--model", str(tiny_pipeline_dir), "--out", str(out), "--limit", "4", "--batch-size", "2", "--push-to-hub", "me/demo", "--private"])
    assert code == 0
    assert hub.repos["me/demo"]["private"] is True
    assert hub.uploaded == shard_files(out) + ["generation.json", "sample_grid.png", "README.md"]
    assert "pushed to https://huggingface.co/datasets/me/demo" in capsys.readouterr().out
    assert main(["generate", str(recipe_file), "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "x"), "--push-to-hub", "bad id!"]) == 2
    assert not (tmp_path / "x").exists()
