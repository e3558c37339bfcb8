"""Size, compute and activation memory of the networks, measured without running them for real.

Everything runs on the ``meta`` device (shapes only, no data, no time): FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls, 2 FLOPs per
multiply-add; elementwise work such as InstanceNorm and GELU is not counted). Activation memory
is the sum of the distinct storages autograd keeps for backward (a ``saved_tensors_hooks``
pack hook), weights excluded: it leaves out weights, gradients, optimizer state and the
transient workspace of kernels, so a GPU's peak is higher. With ``dtype=torch.bfloat16`` the
weights and input are bf16, which saves the same activations as bf16 autocast (instance norm
keeps a float32 copy of its input, as under autocast); autocast's bf16 copies of the weights
(2 bytes per parameter) are left out like the weights themselves. Checked against a real CPU run
in float32 by tests/test_models.py (equal bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from demakeup_dist.models import build_model


@dataclass(frozen=True)
class ModelProfile:
    """Per-model numbers for an input of ``size`` x ``size``; FLOPs per image, memory at ``batch``."""

    name: str
    size: int
    batch: int
    dtype: str
    parameters: int
    gflops_forward: float
    gflops_train: float
    gflops_train_checkpointed: float
    outputs: dict[str, tuple[int, ...]]
    activation_bytes: int
    activation_bytes_checkpointed: int


class _SavedBytes:
    """Pack hook summing the distinct non-parameter storages autograd saves for backward."""

    def __init__(self, model: nn.Module) -> None:
        self._params = {p.untyped_storage()._cdata for p in model.parameters()}
        self._saved: dict[int, int] = {}

    def __call__(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in self._params:
            self._saved[storage._cdata] = storage.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self._saved.values())


def saved_activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during ``model(x)``."""
    hook = _SavedBytes(model)
    with torch.autograd.graph.saved_tensors_hooks(hook, lambda t: t):
        model(x)
    return hook.total


@dataclass(frozen=True)
class _Trace:
    outputs: dict[str, tuple[int, ...]]
    forward_flops: int
    backward_flops: int
    saved_bytes: int


def _trace_train_step(model: nn.Module, x: Tensor) -> _Trace:
    """One forward + backward of ``model(x)``: FLOPs of each half (recomputation counts in the
    backward) and the bytes saved for backward."""
    hook = _SavedBytes(model)
    with torch.autograd.graph.saved_tensors_hooks(hook, lambda t: t), FlopCounterMode(display=False) as fwd:
        out = model(x)
    with FlopCounterMode(display=False) as bwd:
        sum(v.float().mean() for v in out.values()).backward()  # type: ignore[union-attr]
    shapes = {k: tuple(v.shape[1:]) for k, v in out.items()}
    return _Trace(shapes, fwd.get_total_flops(), bwd.get_total_flops(), hook.total)


def _meta_model(name: str, dtype: torch.dtype, overrides: dict[str, Any]) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **overrides).to(dtype)


def profile_model(
    name: str, size: int = 224, batch: int = 64, dtype: torch.dtype = torch.bfloat16, **overrides: Any
) -> ModelProfile:
    """Profile network ``name`` built with ``overrides``; "checkpointed" adds ``grad_checkpointing=True``."""
    x = torch.rand(batch, 3, size, size, device="meta", dtype=dtype)
    plain = _meta_model(name, dtype, overrides)
    p = _trace_train_step(plain, x)
    c = _trace_train_step(_meta_model(name, dtype, {**overrides, "grad_checkpointing": True}), x)
    return ModelProfile(
        name=name,
        size=size,
        batch=batch,
        dtype=str(dtype).removeprefix("torch."),
        parameters=sum(q.numel() for q in plain.parameters()),
        gflops_forward=p.forward_flops / batch / 1e9,
        gflops_train=(p.forward_flops + p.backward_flops) / batch / 1e9,
        gflops_train_checkpointed=(c.forward_flops + c.backward_flops) / batch / 1e9,
        outputs=p.outputs,
        activation_bytes=p.saved_bytes,
        activation_bytes_checkpointed=c.saved_bytes,
    )
