"""What a run reports: its metrics, status and log in the run dir (demakeup_dist/rundir.py), and wandb
(rank 0 only).

The wandb run id is kept in the run dir, so a resumed or requeued job continues the same dashboard
run. `offline` writes wandb's files in the run dir's wandb folder with no network; `disabled`
writes nothing. No secret is written anywhere: wandb finds its credentials itself (WANDB_API_KEY,
the netrc of `wandb login`, its settings files).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import socket
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from demakeup_dist import atomic
from demakeup_dist.rundir import RunDir

if TYPE_CHECKING:
    from demakeup_dist.results import EpochRecord, RunResults
    from demakeup_dist.train.config import TrainConfig

log = logging.getLogger("demakeup")
DEFAULT_WANDB_PROJECT = "demakeup"


def setup_logging(run: RunDir | None, is_main: bool) -> None:
    """Rank 0 logs INFO to stderr and the run's train.log; other ranks only warnings."""
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if run is not None and is_main:
        handler = logging.FileHandler(run.log_file, encoding="utf-8")
        handler.setFormatter(fmt)
        log.addHandler(handler)


@functools.cache
def wandb_has_credentials() -> bool:
    """Whether wandb finds an API key (environment, settings file or netrc), asking no one and no server."""
    import wandb

    # Silent: otherwise login asks the server whom the key belongs to, just to print it (seconds offline).
    wandb.setup(wandb.Settings(silent=True))
    return wandb.login(prompt=False, verify=False)


def wandb_mode(configured: str) -> str:
    """The mode a run with `wandb: configured` uses (see TrainConfig.wandb)."""
    if configured != "auto":
        return configured
    env = os.environ.get("WANDB_MODE", "")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if wandb_has_credentials() else "offline"


def check_wandb(configured: str) -> None:
    """Refuse, before any training, an online run wandb cannot log in for."""
    if wandb_mode(configured) == "online" and not wandb_has_credentials():
        raise ValueError("wandb online: no W&B credentials; run `wandb login` or set WANDB_API_KEY, "
                         "or use --wandb offline (then `wandb sync` the run dir later)")


class RunTracker:
    """Rank 0's reporting. Every method is a no-op on other ranks."""

    def __init__(self, run: RunDir, config: TrainConfig, is_main: bool, restarts: int):
        self.run = run
        self.is_main = is_main
        self.restarts = restarts
        self.wandb_run = None
        self.status: dict[str, Any] = {}
        mode = wandb_mode(config.wandb) if is_main else "disabled"
        if mode != "disabled":
            self.wandb_run = self._init_wandb(config, mode)

    def _init_wandb(self, config: TrainConfig, mode: str):
        import wandb

        run_id = self.run.wandb_id() or secrets.token_hex(4)
        atomic.write_text(self.run.wandb_id_file, run_id + "\n")
        run = wandb.init(
            project=config.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT,
            entity=config.wandb_entity or os.environ.get("WANDB_ENTITY"), group=config.wandb_group,
            tags=config.wandb_tags or None, id=run_id, resume="allow", mode=mode, dir=str(self.run.path),
            name=self.run.path.name, config=config.to_dict(), settings=wandb.Settings(console="off", silent=True),
        )
        log.info("wandb %s run %s (%s)", mode, run_id, run.url if mode == "online" else self.run.wandb_dir)
        return run

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def log_eval(self, record: EpochRecord, images: dict[str, Any] | None = None) -> None:
        if not self.is_main:
            return
        self.run.append_metrics(record.to_dict())
        if self.wandb_run is not None:
            import wandb

            payload = {k: v for k, v in record.flat().items() if k != "step"}
            for name, image in (images or {}).items():
                payload[f"samples/{name}"] = wandb.Image(image)
            self.wandb_run.log(payload, step=record.step)

    def update_status(self, **fields: Any) -> None:
        if not self.is_main:
            return
        self.status.update(fields, restarts=self.restarts, updated=datetime.now(timezone.utc).isoformat(),
                           host=socket.gethostname(), pid=os.getpid())
        self.run.write_status(self.status)

    def finish(self, results: RunResults | None = None) -> None:
        if self.wandb_run is not None:
            if results is not None:
                self.wandb_run.summary.update(results.flat())
            offline, sync_dir = self.wandb_run.offline, self.wandb_run.sync_dir
            self.wandb_run.finish()
            self.wandb_run = None
            if offline:
                log.info("wandb: offline run saved; upload it with: wandb sync %s", sync_dir)


@contextlib.contextmanager
def failures_recorded(run: RunDir):
    """Whatever ends the block with an exception (a bug, a full disk) turns the status this process
    reported as "running" into "failed" with the error, so that no dead run says "running"; an abort
    (a second Ctrl-C: KeyboardInterrupt) into "aborted", which is no failure of the run."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError, ValueError):
            status = run.read_status()
            if status.get("status") == "running" and status.get("pid") == os.getpid():
                error = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__).splitlines()[0]
                kind = "aborted" if isinstance(exc, KeyboardInterrupt) else "failed"
                try:
                    run.write_status({**status, "status": kind, "error": error,
                                      "updated": datetime.now(timezone.utc).isoformat()})
                except OSError as write_error:  # a full disk may refuse even this small file
                    log.warning("warning: could not record the failure in %s (%s)", run.status_file,
                                write_error.strerror)
        raise


class Throughput:
    """Images/s and the fraction of wall time spent waiting for data, over a sliding log window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.data_wait = 0.0
        self.images = 0

    def rates(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.images / elapsed, self.data_wait / elapsed
