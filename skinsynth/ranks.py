"""One process of a multi-process run (`accelerate launch`) failing stops all of them, with its message and exit code.

The processes meet in collective calls (barriers, broadcasts), and a process that raised never arrives: the others
would wait there until a launcher notices the exit and kills them (torchrun does, on its own node only, with SIGTERM
and no reason given) or until the backend's timeout (NCCL: ten minutes or more). So a failing process posts its
message and exit code to the key-value store every process group shares (the first failure wins), and every process
watches that key from a thread: within a second the others print the failing process's message, wherever they are
(in a barrier, or mid-shard), and a few seconds later they exit with its code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from .errors import SkinsynthError

FAILURE_KEY = "skinsynth/failure"
POLL_SECONDS = 0.1
# A launcher that sees one process exit stops the others (torchrun: SIGTERM, then SIGKILL 30 s later) and names the
# first to exit as the run's root cause: the failing process gets this long to exit first, with its own error
# (torch's teardown alone takes about 3 s on a CPU with gloo).
EXIT_AFTER_SECONDS = 10.0


def failure_of(err: Exception, rank: int) -> dict:
    """What the other processes report for `err`: its message and the exit code the CLI gives it (2 for the package's
    own errors, which are bad input; 1 for anything else, whose traceback is in the failing process's output)."""
    if isinstance(err, SkinsynthError):
        return {"rank": rank, "message": str(err), "exit_code": 2}
    return {"rank": rank, "message": f"{type(err).__name__}: {err} (traceback above, from process {rank})", "exit_code": 1}


class FailureWatch:
    """Watches, for one process of `state` (accelerate's `PartialState`), whether another process failed.

    Call `failed(err)` when this process raises and `close()` when it is done; with one process both do nothing. When
    another process failed, this one prints its message at once and, `EXIT_AFTER_SECONDS` later, exits with its exit
    code (`os._exit`: the main thread may be stuck in a collective call that never returns; the run lock is released
    by the OS, and the next run removes temporary shard files).
    """

    def __init__(self, state):
        self.rank, self.num_processes = state.process_index, state.num_processes
        self.store = None
        self.done = threading.Event()
        self.stopping = threading.Lock()  # held by whichever thread prints the failure
        if self.num_processes == 1:
            return
        from torch.distributed.distributed_c10d import _get_default_store

        self.store = _get_default_store()
        threading.Thread(target=self._watch, name="skinsynth-failure-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            try:
                if not self.store.check([FAILURE_KEY]):
                    continue
                failure = json.loads(self.store.get(FAILURE_KEY))
            except Exception:  # the store left with the process that held it: the launcher stops the rest
                return
            if failure["rank"] != self.rank:
                self._stop(failure)
            return

    def failed(self, err: BaseException) -> None:
        """Post `err` as the run's failure unless another process failed first; if one did, stop with its failure.

        An interrupt (Ctrl-C, or the SIGTERM a launcher sends when a process exits) is not posted: the launcher or the
        user stops every process anyway. It still shows the failure that caused it, if there is one."""
        if self.store is None:
            return
        try:
            if isinstance(err, Exception):
                first = self.store.compare_set(FAILURE_KEY, "", json.dumps(failure_of(err, self.rank)))
            else:
                first = self.store.get(FAILURE_KEY) if self.store.check([FAILURE_KEY]) else b""
        except Exception:  # no store any more: this process's own error is all there is to say
            return
        if first:
            failure = json.loads(first)
            if failure["rank"] != self.rank:
                self._stop(failure)

    def _stop(self, failure: dict) -> None:
        if threading.current_thread() is threading.main_thread():  # the launcher's SIGTERM must not turn this into an interrupt
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.stopping.acquire(blocking=False):  # the watching thread and the main thread may both get here: one message
            print(f"error: process {failure['rank']} of {self.num_processes} failed, so process {self.rank} stopped too: {failure['message']}", file=sys.stderr, flush=True)
        time.sleep(EXIT_AFTER_SECONDS)
        os._exit(failure["exit_code"])

    def close(self) -> None:
        self.done.set()
