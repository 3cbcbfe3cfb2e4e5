"""`python -m skinsynth` with one rank failing in its first shard, for tests/test_generate.py (run under a launcher).

$SKINSYNTH_TEST_FAIL is `RANK:KIND`: that rank raises a `ShortfallError` (KIND `shortfall`, bad input: exit code 2)
or a `RuntimeError` (KIND `bug`: exit code 1) instead of writing a shard.
"""

import importlib
import os
import sys

from skinsynth.cli import main
from skinsynth.errors import ShortfallError

generate_module = importlib.import_module("skinsynth.generate")  # `skinsynth.generate` is also the function

RANK = int(os.environ.get("RANK", "0"))
FAILING_RANK, KIND = os.environ["SKINSYNTH_TEST_FAIL"].split(":")


def failing(function):
    def call(*args, **kwargs):
        if RANK == int(FAILING_RANK):
            raise ShortfallError(f"rank {RANK} came up short") if KIND == "shortfall" else RuntimeError(f"rank {RANK} broke")
        return function(*args, **kwargs)

    return call


generate_module.write_shard = failing(generate_module.write_shard)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
