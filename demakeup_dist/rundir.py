"""A run directory: the interface between training, status, cancel, Slurm, evaluation and the report.

`RunDir` is the one place that knows its layout; every other module asks it for a path or a record:

  config.yaml            the resolved TrainConfig; a resume compares its options with it
  status.json            what the trainer is doing: running / stopped / preempted / aborted / finished /
                         failed, step, heartbeat
  metrics.jsonl          one JSON record per evaluation (cut back to the checkpoint on a resume)
  results.json           the best weights' test metrics, written when the run has finished
  best.safetensors       the best weights by val PSNR; model.safetensors: the last epoch's
  checkpoints/step-NNNNNNNN/   full resumable states (train/checkpoint.py), oldest removed first
  samples/epoch-NNNN.png the val panel (input | target | prediction) at each improvement
  train.log              rank 0's log
  profile/trace-rankR.json   the torch.profiler trace of `--profile-steps` (Perfetto / chrome://tracing)
  STOP                   a request to checkpoint and stop, holding its reason (`demakeup cancel`, the
                         Slurm script, the `--nproc` launcher on Ctrl-C)
  trainer.lock           held by the running trainer (train/runlock.py)
  wandb_id.txt, wandb/   the wandb run a resume continues; wandb's offline files
  submissions.json, job.sbatch, slurm-JOBID.out   the Slurm jobs of the run (launch/submit.py)

Every file is written whole or not at all (demakeup_dist/atomic.py), except the append-only
metrics.jsonl and train.log.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demakeup_dist import atomic
from demakeup_dist.choices import STOP_REASONS

if TYPE_CHECKING:
    from demakeup_dist.train.config import TrainConfig

_CHECKPOINT = re.compile(r"^step-(\d{8})$")



@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    # Where each file lives.
    config_file = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    results_file = property(lambda self: self.path / "results.json")
    best_weights = property(lambda self: self.path / "best.safetensors")
    final_weights = property(lambda self: self.path / "model.safetensors")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    log_file = property(lambda self: self.path / "train.log")
    stop_file = property(lambda self: self.path / "STOP")
    lock_file = property(lambda self: self.path / "trainer.lock")
    wandb_id_file = property(lambda self: self.path / "wandb_id.txt")
    wandb_dir = property(lambda self: self.path / "wandb")
    submissions_file = property(lambda self: self.path / "submissions.json")
    job_script = property(lambda self: self.path / "job.sbatch")

    def sample_panel(self, epoch: int) -> Path:
        return self.path / "samples" / f"epoch-{epoch:04d}.png"

    def profile_trace(self, rank: int) -> Path:
        return self.path / "profile" / f"trace-rank{rank}.json"

    def slurm_log(self, job_id: str) -> Path:
        """The job's output file; `job_id` "%j" gives sbatch's --output pattern."""
        return self.path / f"slurm-{job_id}.out"

    def slurm_logs(self) -> list[Path]:
        """The jobs' output files, oldest first."""
        return sorted(self.path.glob(self.slurm_log("*").name), key=lambda p: p.stat().st_mtime)

    def checkpoint(self, global_step: int) -> Path:
        return self.checkpoints_dir / f"step-{global_step:08d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a save in progress has a temporary name)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
        return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def is_checkpoint(self, path: Path) -> bool:
        """Whether `path` is a checkpoint directory of this run."""
        path = Path(path)
        return path.resolve().parent == self.checkpoints_dir.resolve() and bool(_CHECKPOINT.match(path.name))

    # What the files hold.
    def read_status(self) -> dict[str, Any]:
        """status.json; {} before the first start."""
        return atomic.read_json(self.status_file, {})

    def write_status(self, status: dict[str, Any]) -> None:
        atomic.write_json(self.status_file, status, indent=2, default=float)

    def read_results(self) -> dict[str, Any]:
        return atomic.read_json(self.results_file)

    def write_results(self, results: dict[str, Any]) -> None:
        atomic.write_json(self.results_file, results, indent=2, default=float)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def truncate_metrics(self, global_step: int) -> None:
        """Drop evaluation records written after `global_step` (a resume recomputes them)."""
        if self.metrics_file.is_file():
            keep = [r for r in self.read_metrics() if r["step"] <= global_step]
            atomic.write_text(self.metrics_file, "".join(json.dumps(r, default=float) + "\n" for r in keep))

    def read_config(self) -> TrainConfig | None:
        """The run's resolved config; None before the first start."""
        from demakeup_dist.train.config import config_from_file

        return config_from_file(self.config_file) if self.config_file.is_file() else None

    def write_config(self, config: TrainConfig) -> None:
        from demakeup_dist.train.config import config_yaml

        atomic.write_text(self.config_file, config_yaml(config))

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the trainer to checkpoint and stop; `reason` (STOP_REASONS) becomes its final status."""
        atomic.write_text(self.stop_file, reason + "\n")

    def clear_stop(self) -> None:
        self.stop_file.unlink(missing_ok=True)

    def stop_requested(self) -> str | None:
        """The reason of a pending stop request ("stopped" when the file names none), or None."""
        try:
            text = self.stop_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text if text in STOP_REASONS else "stopped"

    def submissions(self) -> list[dict[str, Any]]:
        """The Slurm jobs submitted for this run, oldest first."""
        return atomic.read_json(self.submissions_file, [])

    def record_submission(self, record: dict[str, Any]) -> None:
        atomic.write_json(self.submissions_file, [*self.submissions(), record])

    def wandb_id(self) -> str | None:
        return self.wandb_id_file.read_text(encoding="utf-8").strip() if self.wandb_id_file.is_file() else None

    def holds_run(self) -> bool:
        """Whether a training or a submission has used this directory."""
        return self.status_file.is_file() or self.submissions_file.is_file()


def new_run_dir(model: str, root: Path = Path("runs")) -> Path:
    """The default run dir of a new `model` run: ROOT/MODEL-YYYYmmdd-HHMMSS."""
    return Path(root) / f"{model}-{datetime.now():%Y%m%d-%H%M%S}"


def find_runs(root: Path) -> list[RunDir]:
    """The run dirs directly under `root`, the most recently changed last."""
    found = [RunDir(p) for p in Path(root).glob("*/") if RunDir(p).holds_run()]
    return sorted(found, key=lambda run: run.path.stat().st_mtime)

