"""Process-group plumbing: the Accelerator for a config, and stop requests all ranks agree on.

Launching is accelerate's job (`accelerate launch`, also under Slurm); this module only builds the
`Accelerator` inside each process. On a machine without CUDA it uses gloo and CPU (accelerate would
otherwise need ACCELERATE_USE_CPU=1 to avoid silently running independent world-size-1 jobs).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import timedelta

import torch

from demakeup_dist.choices import MIXED_PRECISION
from demakeup_dist.resources import deepspeed_config as deepspeed_template
from demakeup_dist.rundir import RunDir
from demakeup_dist.train.config import TrainConfig



def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def deepspeed_config(config: TrainConfig, micro_batch: int, precision: str) -> dict:
    """`configs/deepspeed/zero{N}.json` with the values that must match this run filled in."""
    ds = json.loads(deepspeed_template(config.zero).read_text(encoding="utf-8"))
    ds["train_micro_batch_size_per_gpu"] = micro_batch
    ds["gradient_accumulation_steps"] = 1
    ds["gradient_clipping"] = config.grad_clip_norm
    ds["bf16"] = {"enabled": precision == "bf16"}
    ds["fp16"] = {"enabled": precision == "fp16"}
    return ds


def check_strategy(strategy: str) -> None:
    """accelerate 1.15 hands a CUDA-less run to DeepSpeed without a process group of its own: every rank
    then believes it is rank 0 of 1 (measured), so refuse instead of corrupting the run dir."""
    if strategy == "deepspeed" and not torch.cuda.is_available():
        raise ValueError("--strategy deepspeed needs CUDA GPUs; on CPU use --strategy ddp (same recipe, same results)")


def make_accelerator(config: TrainConfig, micro_batch_for_deepspeed: int | None = None, cpu: bool | None = None):
    """The Accelerator of a run; `cpu` forces the CPU (default: CUDA when available)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    cpu = not torch.cuda.is_available() if cpu is None else cpu
    precision = resolve_precision(config.precision)
    check_strategy(config.strategy)
    handlers = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # naming a backend alone makes accelerate go distributed
        handlers.append(InitProcessGroupKwargs(backend="gloo" if cpu else "nccl", timeout=timedelta(minutes=30)))
    plugin = None
    if config.strategy == "deepspeed":
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(config, micro_batch_for_deepspeed or 1, precision))
    return Accelerator(
        cpu=cpu,
        mixed_precision=MIXED_PRECISION[precision],
        deepspeed_plugin=plugin,
        kwargs_handlers=handlers,
        # The schedule is written in optimizer steps; accelerate would otherwise step it once per process.
        step_scheduler_with_optimizer=False,
    )


class StopRequest:
    """A clean stop asked for by a signal or by the run dir's stop request (`RunDir.request_stop`);
    `agreed()` is a collective. A context manager: the signal handlers are ours only while training runs.

    SIGINT (Ctrl-C) and SIGTERM outside Slurm mean "stopped"; SIGUSR1 (Slurm's notice before a time
    limit) and SIGTERM under Slurm (what a preemption without grace sends every task) mean "preempted".
    A second Ctrl-C raises KeyboardInterrupt at once: an abort, with no checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, run: RunDir):
        self.run = run
        self.signalled: str | None = None
        self.reason: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signalled == "SIGINT":
            raise KeyboardInterrupt
        if self.signalled is None:
            self.signalled = signal.Signals(signum).name
            self.reason = signal_reason(signum)
            if signum == signal.SIGINT:
                # os.write: the handler may interrupt a write to sys.stderr, which is not reentrant.
                os.write(2, b"\nstopping at the next step with a checkpoint (Ctrl-C again aborts without one)\n")

    def agreed(self, accelerator, nonfinite_loss: torch.Tensor) -> tuple[str | None, bool]:
        """(the stop reason if any rank was asked to stop, else None; non-finite loss on any rank), the
        same answer on every rank. "preempted" wins over "stopped": the job must requeue."""
        reason = self.reason or self.run.stop_requested()
        local = torch.stack([
            torch.tensor(float(reason == "stopped"), device=nonfinite_loss.device),
            torch.tensor(float(reason == "preempted"), device=nonfinite_loss.device),
            nonfinite_loss.float(),
        ])
        total = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
        stopped, preempted, bad = total.tolist()
        return ("preempted" if preempted else "stopped" if stopped else None), bad > 0


def under_slurm() -> bool:
    """Inside a Slurm job (not `demakeup submit --local`, which runs the job script here)."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("DEMAKEUP_LOCAL") != "1"


def signal_reason(signum: int) -> str:
    """The status a clean stop on `signum` ends with (choices.STOP_REASONS)."""
    if signum == signal.SIGUSR1 or (signum == signal.SIGTERM and under_slurm()):
        return "preempted"
    return "stopped"


def launched() -> bool:
    """True inside a process started by a launcher (accelerate launch / torchrun set WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ or os.environ.get("DEMAKEUP_RELAUNCHED") == "1"


def relaunch_command(nproc: int, precision: str, argv: list[str], zero: int | None = None) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch` of `demakeup <argv>` on `nproc` local processes, and its extra environment.

    `zero` selects DeepSpeed (its launcher sets up the process group even for one process). Without CUDA
    the processes use the CPU and gloo; ACCELERATE_USE_CPU=1 is required for that, or `--multi_gpu`
    silently starts independent world-size-1 trainings. DEMAKEUP_RELAUNCHED stops a second relaunch.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", MIXED_PRECISION[resolve_precision(precision)],
           "--dynamo_backend", "no"]
    if zero is not None:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_template(zero))]
    elif nproc > 1:
        cmd.append("--multi_gpu")
    env = {"DEMAKEUP_RELAUNCHED": "1"}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
    return cmd + ["-m", "launcher.main", *argv], env
