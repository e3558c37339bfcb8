"""`demakeup train --nproc N`'s own process: it starts `accelerate launch` and turns every way of
stopping it into the trainer's clean stop.

The launch runs in a session of its own, so a Ctrl-C on the terminal reaches only this process (not
torch elastic, whose signal handling kills its workers with a traceback). Here:
  * SIGINT, SIGTERM, SIGUSR1 become a stop request in the run dir (`RunDir.request_stop`, with the
    reason the trainer would give the signal itself), renewed every second until the launch ends:
    every rank checkpoints at the same step boundary and exits; a second Ctrl-C kills the launch at
    once (an abort, no checkpoint);
  * the launch gets a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`, kept across exec), so a
    kill -9 of this process takes the launch with it, and each worker gets one too
    (`die_with_parent`), so the launch's death takes its workers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from demakeup_dist.rundir import RunDir
from demakeup_dist.train.distributed import signal_reason

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request: it is too late to be told
        os.kill(os.getpid(), sig)


class Supervisor:
    """Run `cmd` (the launch) and forward stops to `run`; `wait()` returns the launch's exit code."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, cmd: list[str], env: dict[str, str], run: RunDir):
        self.run, self.reason, self.aborted = run, None, False
        self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        # The launch (torch elastic's agent) dies on SIGTERM from the kernel when this process dies; it
        # then stops its workers the way it stops them on any SIGTERM.
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                     preexec_fn=lambda: die_with_parent(signal.SIGTERM))

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            self.aborted = True
            os.killpg(self.proc.pid, signal.SIGKILL)  # the workers follow by their parent-death signal
            return
        if self.reason is None:
            self.reason = signal_reason(signum)
            if signum == signal.SIGINT:
                os.write(2, b"\nstopping at the next step with a checkpoint (Ctrl-C again aborts without one)\n")
            self._request()

    def _request(self) -> None:
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.run.request_stop(self.reason)

    def wait(self) -> int:
        try:
            while True:
                try:
                    code = self.proc.wait(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    if self.reason is not None and not self.aborted:
                        self._request()  # a trainer still starting up clears an earlier request
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            if self.reason is not None:
                self.run.clear_stop()
        return code
