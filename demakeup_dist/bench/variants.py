"""The ways `demakeup bench` builds a network; every variant runs the training loop's step.

Plain data, importable without torch: the command line lists the variants in its help.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Variant:
    """One way of building a network: the reference, or ours with some formulations or options changed."""

    summary: str
    reference: bool = False
    norm: str | None = None  # layers.InstanceNorm2d formulation; None: the default
    sr_head: str | None = None  # layers.SRHead formulation; None: the default
    overrides: tuple[tuple[str, Any], ...] = ()

    def build(self, model: str, grad_checkpointing: bool = False) -> nn.Module:
        """Network `model` as this variant builds it (the reference has no checkpointing)."""
        from demakeup_dist.models import build_model
        from demakeup_dist.models.layers import implementation
        from demakeup_dist.models.reference_arch import build_reference

        if self.reference:
            return build_reference(model)
        overrides = dict(self.overrides) | ({"grad_checkpointing": True} if grad_checkpointing else {})
        with implementation(norm=self.norm, sr_head=self.sr_head):
            return build_model(model, **overrides)


VARIANTS: dict[str, Variant] = {
    "reference": Variant("plain PyTorch p3/p4 (models/reference_arch.py) in the loop's step", reference=True),
    "ours": Variant("the project's network in the loop's step (what `demakeup train` runs)"),
    "ours-reductions": Variant("ours, InstanceNorm as var_mean reductions in eager mode too", norm="reductions"),
    "ours-native": Variant("ours, F.instance_norm under torch.compile too", norm="native"),
    "ours-layered": Variant("ours, the SR head run layer by layer", sr_head="layered"),
    "ours-ckpt-decoder": Variant("ours with checkpoint_decoder=True (p4 only): the decoder blocks recomputed",
                                 overrides=(("checkpoint_decoder", True),)),
}


def check_models(models: Sequence[str], variants: Sequence[str]) -> None:
    """ValueError when a variant cannot be built for one of `models` before anything runs."""
    from demakeup_dist.models.reference_arch import REFERENCE_MODELS

    others = [m for m in models if m not in REFERENCE_MODELS]
    if others and any(VARIANTS[v].reference for v in variants):
        raise ValueError(f"the reference implementation exists for {' and '.join(REFERENCE_MODELS)} only, not "
                         f"{', '.join(others)}: drop `reference` from the variants or bench "
                         f"{' / '.join(REFERENCE_MODELS)}")
