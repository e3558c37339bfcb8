"""What an evaluation measured, as one structure: per task the model's PSNR / SSIM, and per task the
baseline a network must beat (`BASELINES`).

Everything that stores or shows metrics goes through it: results.json (`RunResults`), each line of
metrics.jsonl (`EpochRecord`), the `demakeup evaluate` table, the report; and, by `flat()`, the names
wandb and status.json show (`val/demakeup/psnr`, `test/baseline/sr/ssim`). A metric is found by its
task and measure, never by taking a name apart. The best checkpoint is chosen by `Evaluation.psnr`.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator

from demakeup_dist.choices import TASKS, check_choice

BASELINES = {"demakeup": "identity", "sr": "bicubic"}
"""Per task, what a network is compared with: its input unchanged, or its input upsampled 4x bicubically."""


@dataclass(frozen=True)
class Quality:
    """Mean PSNR (dB) and SSIM of one image output over one split."""

    psnr: float
    ssim: float


MEASURES = tuple(f.name for f in fields(Quality))


@dataclass(frozen=True)
class Evaluation:
    """One split's means: the model's per task, and (when measured) the baseline's per task."""

    metrics: dict[str, Quality]
    baselines: dict[str, Quality] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for task in (*self.metrics, *self.baselines):
            check_choice("task", task, TASKS)
        if "demakeup" not in self.metrics:
            raise ValueError(f"an evaluation needs the demakeup head's metrics, got tasks {list(self.metrics)}")

    @property
    def psnr(self) -> float:
        """The de-makeup head's PSNR: the number the best checkpoint is chosen by."""
        return self.metrics["demakeup"].psnr

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {task: asdict(q) for task, q in self.metrics.items()},
                "baselines": {task: {"name": BASELINES[task], **asdict(q)} for task, q in self.baselines.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "evaluation") -> Evaluation:
        """Inverse of `to_dict`; a ValueError naming `source` (a file) for any other shape."""
        with _reading(source, "an evaluation"):
            return _evaluation(data)

    def flat(self, split: str) -> dict[str, float]:
        """Readable flat names, e.g. {"val/demakeup/psnr": ..., "val/baseline/demakeup/psnr": ...}."""
        names = {f"{split}/{task}/{m}": v for task, q in self.metrics.items() for m, v in asdict(q).items()}
        names.update({f"{split}/baseline/{task}/{m}": v for task, q in self.baselines.items()
                      for m, v in asdict(q).items()})
        return names

    def __str__(self) -> str:
        """For log lines: "demakeup PSNR 25.123 dB SSIM 0.8123 (identity 24.000 dB, 0.7900), sr PSNR ..."."""
        parts = []
        for task, q in self.metrics.items():
            base = self.baselines.get(task)
            parts.append(f"{task} PSNR {q.psnr:.3f} dB SSIM {q.ssim:.4f}"
                         + (f" ({BASELINES[task]} {base.psnr:.3f} dB, {base.ssim:.4f})" if base else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class RunResults:
    """results.json: the best weights' evaluation, with the baselines, on one split (the trainer's: test)."""

    model: str
    split: str
    best_epoch: int
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split": self.split, "best_epoch": self.best_epoch,
                **self.evaluation.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> RunResults:
        with _reading(source, "a run's results"):
            return cls(data["model"], data["split"], int(data["best_epoch"]), _evaluation(data))

    def flat(self) -> dict[str, float]:
        """The numbers under readable names (wandb's run summary, status.json's last metrics)."""
        return {"best_epoch": self.best_epoch, **self.evaluation.flat(self.split)}


@dataclass(frozen=True)
class EpochRecord:
    """One line of metrics.jsonl: an evaluated epoch, with its val evaluation and val baselines."""

    epoch: int
    step: int
    train_loss: float
    lr: float
    train_s: float  # wall seconds of this process's epoch (since its start or resume), training only
    epoch_s: float  # the same with validation
    val: Evaluation

    def _scalars(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "val"}

    def to_dict(self) -> dict[str, Any]:
        return {**self._scalars(), "val": self.val.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "metrics record") -> EpochRecord:
        with _reading(source, "an epoch record"):
            scalars = {f.name: data[f.name] for f in fields(cls) if f.name != "val"}
            return cls(**scalars, val=_evaluation(data["val"]))

    def flat(self) -> dict[str, float]:
        """The numbers under readable names (wandb, status.json's last metrics)."""
        return {**self._scalars(), **self.val.flat("val")}


def _evaluation(data: dict[str, Any]) -> Evaluation:
    def quality(entry: dict[str, Any]) -> Quality:
        return Quality(**{m: float(entry[m]) for m in MEASURES})

    return Evaluation({task: quality(q) for task, q in data["metrics"].items()},
                      {task: quality(q) for task, q in data.get("baselines", {}).items()})


@contextlib.contextmanager
def _reading(source: str, what: str) -> Iterator[None]:
    """Turn a missing key or a wrong type into one error naming the file and the way out."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{source}: not {what} as this demakeup version writes it ({type(exc).__name__}: {exc}); "
                         "if another version wrote it, retrain that run with this one") from None
