"""One trainer per run dir: a lock held for the run's lifetime.

The lock is a POSIX record lock (`fcntl.lockf`) on the run dir's lock file (`RunDir.lock_file`). Unlike a "lock file exists"
flag it is released by the kernel when its process dies, even by kill -9, so a crash never leaves a
run dir locked; unlike `flock` it is also enforced between machines on NFS (through the NFS lock
manager) and on Lustre mounted with `-o flock`. The file holds the holder's host, pid and start time
so that a refused trainer can say who holds the run. The file itself is never deleted: unlinking a
lock file lets two processes lock two different files of the same name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime, timezone

from demakeup_dist.rundir import RunDir
from demakeup_dist.train.tracking import log

class RunDirLocked(ValueError):
    """Another trainer holds the run dir."""


class RunLock:
    """`with RunLock(run):` holds the run dir's lock; `enabled=False` (other ranks) does nothing."""

    def __init__(self, run: RunDir, enabled: bool = True):
        self.path = run.lock_file
        self.enabled = enabled
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise RunDirLocked(
                    f"run dir {self.path.parent} is in use by another trainer ({holder}); wait for it to end "
                    f"or stop it (`demakeup cancel {self.path.parent}`), or choose another --run-dir"
                ) from None
            # ENOLCK / EOPNOTSUPP: the filesystem offers no locks (e.g. Lustre without -o flock).
            log.warning("warning: cannot lock %s (%s): nothing stops a second trainer on this run dir",
                        self.path, exc.strerror)
            return self
        os.ftruncate(fd, 0)
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, in words, from what the holder wrote into the file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
