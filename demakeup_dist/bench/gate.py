"""A rendezvous of benchmark processes that share one GPU (`demakeup bench --gate`, scripts/gpu_bench.sh).

One torch.compile of p4 takes about a minute, so the cases of a GPU run are separate processes
started together: they compile at the same time (CPU work), then time one at a time, so no two
timed runs share the GPU. A folder both counts the processes that are ready and holds the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Gate:
    """Lets benchmark processes that share one GPU compile at the same time but time one at a time.

    Each compiling process prepares (builds, compiles, warms up) its first case while the others do
    theirs; then (at once, if it does not compile) `run_train` calls `enter()`: the process reports
    ready, waits until `parties` processes are ready (or until
    `timeout_s` after the gate was opened) and takes an exclusive lock on FOLDER/lock that it keeps
    until its `with` block ends, so timed steps never share the GPU. A process that fails before
    `enter()` is counted as ready when its `with` block ends, so the others do not wait for it.
    """

    def __init__(self, folder: Path, parties: int, timeout_s: float = 300.0) -> None:
        if parties < 1:
            raise ValueError(f"--gate-parties {parties}: must be at least 1")
        self.folder, self.parties, self.timeout_s = Path(folder), parties, timeout_s
        self.all_ready: bool | None = None  # set by enter(): False if it stopped waiting at the timeout
        self._deadline = 0.0
        self._marked = False
        self._lock: Any = None

    def __enter__(self) -> Gate:
        (self.folder / "ready").mkdir(parents=True, exist_ok=True)
        self._deadline = time.monotonic() + self.timeout_s
        return self

    def __exit__(self, *exc: object) -> None:
        self._mark_ready()
        if self._lock is not None:
            self._lock.close()  # releases the flock

    def enter(self) -> None:
        """Report ready, wait for the others, take the lock (no-op after the first call)."""
        if self._lock is not None:
            return
        self._mark_ready()
        ready = 0
        while (ready := len(list((self.folder / "ready").iterdir()))) < self.parties \
                and time.monotonic() < self._deadline:
            time.sleep(0.5)
        self.all_ready = ready >= self.parties
        if not self.all_ready:
            log.warning("gate: %d of %d processes ready at the %.0f s timeout; timing anyway",
                        ready, self.parties, self.timeout_s)
        self._lock = open(self.folder / "lock", "a")  # noqa: SIM115 -- held until __exit__
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def _mark_ready(self) -> None:
        if not self._marked:
            # Not id(self): a gate freed in this process may hand its id to the next one.
            (self.folder / "ready" / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
            self._marked = True
