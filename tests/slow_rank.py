"""`python -m skinsynth` with the calling rank slowed, for tests/test_generate.py (run under torchrun).

Every rank but 0 sleeps after each collective call (barrier or broadcast), so rank 0 always runs ahead; each
`write_shard` call is appended to $SKINSYNTH_TEST_CALLS as `RANK:FILE`, so the test sees who wrote what.
"""

import importlib
import os
import sys
import time

import accelerate.utils
from accelerate import PartialState

from skinsynth.cli import main

generate_module = importlib.import_module("skinsynth.generate")  # `skinsynth.generate` is also the function

RANK = int(os.environ.get("RANK", "0"))
DELAY = 3.0


def slowed(function):
    def call(*args, **kwargs):
        result = function(*args, **kwargs)
        if RANK != 0:
            time.sleep(DELAY)
        return result

    return call


def recorded(function):
    def call(out, task, *args, **kwargs):
        with open(os.environ["SKINSYNTH_TEST_CALLS"], "a") as f:
            f.write(f"{RANK}:{task.file}\n")
        return function(out, task, *args, **kwargs)

    return call


PartialState.wait_for_everyone = slowed(PartialState.wait_for_everyone)
accelerate.utils.broadcast_object_list = slowed(accelerate.utils.broadcast_object_list)
generate_module.write_shard = recorded(generate_module.write_shard)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
