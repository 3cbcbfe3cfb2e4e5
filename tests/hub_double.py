"""`python -m skinsynth` with the Hub replaced by tests/test_hub.py's FakeHub whose repo lives in a folder (argv[1]),
so that a push can be killed with `kill -9` and pushed again (tests/test_faults.py).

The repo is saved after every commit, as the real Hub applies a commit whole or not at all.
"""

import pickle
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from skinsynth.cli import main
from tests.test_hub import FakeHub

STATE = Path(sys.argv[1])


def save(hub: FakeHub) -> None:
    tmp = STATE / ".hub.pkl.tmp"
    tmp.write_bytes(pickle.dumps({"refs": hub.refs, "commits": hub.commits, "repos": hub.repos}))
    tmp.replace(STATE / "hub.pkl")


if __name__ == "__main__":
    hub = FakeHub()
    if (STATE / "hub.pkl").is_file():
        hub.__dict__.update(pickle.loads((STATE / "hub.pkl").read_bytes()))
    patch = pytest.MonkeyPatch()
    hub.install(patch)
    commit = HfApi.create_commit

    def create_commit(api, *args, **kwargs):
        info = commit(api, *args, **kwargs)
        save(hub)
        return info

    patch.setattr(HfApi, "create_commit", create_commit)
    sys.exit(main(sys.argv[2:]))
