"""How a global batch is laid out over the processes, its learning rate, and what the layout costs.

Two ways to ask for a batch (TrainConfig):
  * `batch_size` G, the global batch (the brief's 64): every process takes G / (world x grad_accum)
    images per forward pass, so the same global batches reach the weights on any process count;
  * `batch_per_gpu` B: the global batch grows with the processes, G = B x grad_accum x world
    (DeepSpeed's and torchtitan's "global = micro x accumulation x GPUs").
`grad_accum` K sums the gradients of K forward passes per optimizer step (a global batch that does
not fit one pass per GPU). The peak learning rate follows `lr_scaling` from the recipe's reference
batch of 64: none (lr as given), linear (lr x G / 64) or sqrt (lr x sqrt(G / 64)).

`expected_efficiency` is the project's scaling model of docs/performance.md ("Scaling to many
GPUs"), not a measurement: its numbers are p4's on an H100/H200-class GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from demakeup_dist.choices import LR_SCALINGS, check_choice

REFERENCE_BATCH = 64
"""The brief's batch, at which `lr` is the peak learning rate whatever `lr_scaling` says."""

# docs/performance.md, "Scaling to many GPUs": p4 at 2500 img/s per GPU (25.6 ms per 64 images), a
# per-step floor of kernel launches in eager mode (~5-10 ms: 7.5), the fused AdamW step (~1 ms), a
# fp32 gradient all-reduce of 0.47 ms within an NVLink node and 4 ms across InfiniBand nodes, hidden
# behind the backward pass (2/3 of the compute) as far as it lasts.
MS_PER_IMAGE = 25.6 / 64
LAUNCH_FLOOR_MS = 7.5
OPTIMIZER_MS = 1.0
ALLREDUCE_MS = {"nvlink": 0.47, "infiniband": 4.0}
GPUS_PER_NODE = 8
ADVISE_BELOW = 0.8
"""Below this expected efficiency the batch line says how to scale instead."""


@dataclass(frozen=True)
class BatchPlan:
    world: int
    per_gpu: int
    """Images per forward pass on one process (the micro batch)."""
    grad_accum: int
    global_batch: int
    lr: float
    """The peak learning rate after `lr_scaling`."""
    lr_scaling: str

    @property
    def per_step(self) -> int:
        """Images one process contributes to an optimizer step."""
        return self.per_gpu * self.grad_accum

    def describe(self, gpus: bool = True) -> str:
        unit = "GPU" if gpus else "process"
        units = unit + ("" if self.world == 1 else "es" if unit == "process" else "s")
        scaled = "" if self.lr_scaling == "none" else f" ({self.lr_scaling} scaling from batch {REFERENCE_BATCH})"
        return (f"batch: {self.world} {units} x {self.per_gpu} per {unit} x "
                f"{self.grad_accum} accumulation = global batch {self.global_batch}, peak lr {self.lr:.4g}{scaled}")


def plan_batch(config, world: int) -> BatchPlan:
    """The layout of `config`'s batch on `world` processes; ValueError naming the options when it does not split."""
    check_choice("lr_scaling", config.lr_scaling, LR_SCALINGS)
    accum = config.grad_accum
    if config.batch_per_gpu is not None:
        per_gpu, global_batch = config.batch_per_gpu, config.batch_per_gpu * accum * world
    else:
        global_batch = config.batch_size
        if global_batch % (world * accum):
            fits = [k for k in range(1, global_batch + 1) if global_batch % (world * k) == 0]
            hint = (f"--grad-accum {' or '.join(map(str, fits[:4]))}" if fits else
                    f"a --batch-size that is a multiple of {world * accum}, or --batch-per-gpu N")
            raise ValueError(f"--batch-size {global_batch} does not split over {world} process(es) x "
                             f"{accum} accumulation step(s): use {hint}")
        per_gpu = global_batch // (world * accum)
    return BatchPlan(world, per_gpu, accum, global_batch, scaled_lr(config.lr, global_batch, config.lr_scaling),
                     config.lr_scaling)


def scaled_lr(lr: float, global_batch: int, rule: str) -> float:
    ratio = global_batch / REFERENCE_BATCH
    return {"none": lr, "linear": lr * ratio, "sqrt": lr * math.sqrt(ratio)}[rule]


def expected_efficiency(per_gpu: int, gpus: int) -> float:
    """Throughput per GPU relative to one GPU at batch 64, by the model above (1.0 = perfect scaling)."""

    def step_ms(batch: int, n: int) -> float:
        compute = batch * MS_PER_IMAGE
        allreduce = 0.0 if n == 1 else ALLREDUCE_MS["nvlink" if n <= GPUS_PER_NODE else "infiniband"]
        exposed = max(0.0, allreduce - compute * 2 / 3)
        return max(compute, LAUNCH_FLOOR_MS) + OPTIMIZER_MS + exposed

    one = REFERENCE_BATCH / step_ms(REFERENCE_BATCH, 1)
    return (per_gpu / step_ms(per_gpu, gpus)) / one


def efficiency_note(plan: BatchPlan) -> str | None:
    """The advice for a GPU run whose per-GPU batch is small by the model; None when it is fine."""
    if plan.world < 2:
        return None
    efficiency = expected_efficiency(plan.per_gpu, plan.world)
    if efficiency >= ADVISE_BELOW:
        return None
    scaled = REFERENCE_BATCH * plan.world
    return (f"note: {plan.per_gpu} images per GPU on {plan.world} GPUs: expected scaling efficiency ~"
            f"{efficiency:.0%} (the project's model, docs/performance.md; not a measurement). For speed, "
            f"scale the batch with the GPUs: --batch-per-gpu {REFERENCE_BATCH} --lr-scaling sqrt (global "
            f"{scaled}); keep --batch-size {plan.global_batch} only to reproduce the recipe exactly")


def efficiency_table(per_gpu_batches=(64, 32, 16, 8, 4, 1), gpus=(1, 2, 4, 8, 16, 64)) -> str:
    """The model's efficiency for each per-GPU batch and GPU count, as a markdown table."""
    head = "| per-GPU batch | " + " | ".join(f"{n} GPU{'s' * (n > 1)}" for n in gpus) + " |"
    rows = [head, "|---:|" + "---:|" * len(gpus)]
    for batch in per_gpu_batches:
        rows.append(f"| {batch} | " + " | ".join(f"{expected_efficiency(batch, n):.0%}" for n in gpus) + " |")
    return "\n".join(rows)
