"""`demakeup export`: a trained network as an ONNX file, and a `Runner` that predicts with one.

The file has one input ``image``: float32 NCHW RGB in [0, 1], batch, height and width dynamic, height
and width multiples of 32 (exported with torch.export's ``32 * Dim``, so the graph knows it); one
output per task (``demakeup``, and ``sr`` at 4x for p4), float32 in [0, 1]. Its metadata
(``metadata_props``) says so in words and carries the weights' own metadata (network, options,
training image size), which `onnx_runner` reads back so that face mode knows the training size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from demakeup_dist.atomic import atomic_path
from demakeup_dist.choices import SIZE_MULTIPLE
from demakeup_dist.infer.faces import INSTALL_HINT
from demakeup_dist.infer.photos import writing
from demakeup_dist.infer.runner import Runner
from demakeup_dist.weights import WeightsInfo

OPSET = 18
INPUT = "image"


class _Outputs(nn.Module):
    """The network with a tuple of outputs in task order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        return tuple(out[task] for task in self.model.tasks)


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(f"ONNX export / inference needs {module}: {INSTALL_HINT.split(' (')[0]}") from exc


def metadata(model: nn.Module, info: WeightsInfo) -> dict[str, str]:
    """The ONNX file's metadata_props."""
    return {
        "opset": str(OPSET), "input": INPUT, "input_layout": "NCHW, RGB, float32",
        "value_range": "[0, 1] in and out",
        "dynamic_axes": f"batch; height and width: any multiples of {SIZE_MULTIPLE}",
        "outputs": json.dumps({task: "x1" if task == "demakeup" else "x4" for task in model.tasks}),
        "tasks": json.dumps(list(model.tasks)),
        **{f"demakeup.{key}": value for key, value in info.to_metadata().items()},
    }


def export_onnx(model: nn.Module, info: WeightsInfo, out: Path) -> Path:
    """Write `model` (described by `info`) to `out` as ONNX; returns `out`. Written whole or not at all."""
    onnx = _need("onnx")
    _need("onnxscript")  # torch's exporter imports it lazily, with a less helpful error
    from torch.export import Dim

    out = Path(out)
    side = info.image_size or 2 * SIZE_MULTIPLE
    example = torch.rand(1, 3, side, side)
    shapes = {"x": {0: Dim("batch"), 2: SIZE_MULTIPLE * Dim("height_32"), 3: SIZE_MULTIPLE * Dim("width_32")}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's chatter about torchvision ops and pytree internals
        program = torch.onnx.export(_Outputs(model.eval()), (example,), input_names=[INPUT],
                                    output_names=list(model.tasks), opset_version=OPSET, dynamo=True,
                                    dynamic_shapes=shapes, external_data=False, verbose=False)
    proto = program.model_proto
    for key, value in metadata(model, info).items():
        proto.metadata_props.add(key=key, value=value)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            onnx.save(proto, str(tmp))
    return out


def onnx_runner(path: Path) -> Runner:
    """A Runner of an ONNX file written by `export_onnx`, on onnxruntime's CUDA provider when there is
    one, else the CPU."""
    ort = _need("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file (make one with `demakeup export RUN_DIR --out {path}`)")
    try:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for every kind of bad file
        raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc
    meta = session.get_modelmeta().custom_metadata_map
    if "tasks" not in meta:
        raise ValueError(f"{path}: no demakeup metadata; export it with `demakeup export RUN_DIR --out {path}`")
    names = [o.name for o in session.get_outputs()]

    def forward(x: Tensor) -> dict[str, Tensor]:
        outputs = session.run(names, {INPUT: np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return {name: torch.from_numpy(out) for name, out in zip(names, outputs)}

    size = meta.get("demakeup.image_size")
    return Runner(forward, tuple(json.loads(meta["tasks"])), int(size) if size else None,
                  f"{meta.get('demakeup.model', 'network')} (ONNX {path.name})")
