"""`demakeup export` to ONNX: parity with PyTorch in onnxruntime, metadata, `predict --onnx` = `predict`,
and predict / export failing on an unwritable target with one line naming the file."""

import errno

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from demakeup_dist.models import build_model
from demakeup_dist.weights import describe, save_weights
from launcher.main import app

onnx = pytest.importorskip("onnx", reason="export needs the infer extra (scripts/bootstrap.sh installs it)")
ort = pytest.importorskip("onnxruntime")

SMALL_P1 = {"base_channels": 4, "depth": 2}  # not residual: the output is far from the input, a real check


# Every test but one uses the exported file; torch's exporter takes 20-50 s on a loaded 2-core machine.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(weights, onnx file, the torch network) of a small random p1 trained at 64 px, exported once."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = build_model("p1", **SMALL_P1).eval()
    weights = root / "p1.safetensors"
    save_weights(net.state_dict(), weights, describe("p1", SMALL_P1, image_size=64))
    result = CliRunner().invoke(app, ["export", str(weights), "--out", str(root / "p1.onnx")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "64 px" in result.output
    return weights, root / "p1.onnx", net


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 96, 160), (1, 3, 32, 224)])
def test_onnxruntime_matches_pytorch(exported, shape):
    _, path, net = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = net(x)["demakeup"].numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-3


def test_onnx_metadata_says_layout_range_and_training_size(exported):
    _, path, _ = exported
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["opset"] == "18" and meta["input_layout"].startswith("NCHW")
    assert meta["value_range"].startswith("[0, 1]") and "multiples of 32" in meta["dynamic_axes"]
    assert (meta["demakeup.model"], meta["demakeup.image_size"]) == ("p1", "64")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3])) and dims[1].dim_value == 3


def test_predict_onnx_matches_predict(exported, tmp_path):
    weights, path, _ = exported
    photo = np.random.default_rng(0).integers(0, 256, (72, 100, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "a.png")
    runs = {"torch": [str(weights), str(tmp_path / "a.png")], "onnx": ["--onnx", str(path), str(tmp_path / "a.png")]}
    for name, args in runs.items():
        result = CliRunner().invoke(app, ["predict", *args, "--out", str(tmp_path / name), "--tile", "64",
                                          "--overlap", "16"])
        assert result.exit_code == 0, result.output
    a, b = (np.asarray(Image.open(tmp_path / n / "a_demakeup.png")).astype(int) for n in runs)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01  # the same up to float rounding
    assert not np.array_equal(a, photo)


def test_predict_onnx_refuses_a_file_that_is_not_onnx(tmp_path):
    (tmp_path / "fake.onnx").write_text("not a model")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["predict", "--onnx", str(tmp_path / "fake.onnx"), str(tmp_path / "a.png"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "fake.onnx: not a loadable ONNX model" in result.output


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EROFS, "Read-only file system")])
def test_predict_unwritable_target_is_one_line_naming_the_file(exported, tmp_path, monkeypatch, code, reason):
    weights, _, _ = exported
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")

    def fail(self, fp, *args, **kwargs):
        raise OSError(code, reason)  # what write() raises: no file name

    monkeypatch.setattr(Image.Image, "save", fail)
    result = CliRunner().invoke(app, ["predict", str(weights), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    target = tmp_path / "out" / "a_demakeup.png"
    assert result.output.strip().splitlines() == [
        f"error: cannot write {target}: {reason}; free some space, make it writable or choose another --out"]
    assert list((tmp_path / "out").iterdir()) == []  # no partial file


def test_export_full_disk_is_one_line_and_leaves_no_file(exported, tmp_path, monkeypatch):
    weights, path, _ = exported

    class Exported:  # the exporter's result, without exporting again
        model_proto = onnx.load(str(path))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: Exported())
    monkeypatch.setattr(onnx, "save", full)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(weights), "--out", str(out)])
    assert result.exit_code == 2 and f"cannot write {out}: No space left on device" in result.output
    assert list(tmp_path.iterdir()) == []


def test_p4_exports_both_heads(tmp_path):
    """p4's two outputs (the SR one at 4x) through ONNX; ResNet34 encoder, so its own (slow) export."""
    from demakeup_dist.infer.export import export_onnx, onnx_runner
    from demakeup_dist.infer.runner import torch_runner

    torch.manual_seed(0)
    net = build_model("p4").eval()
    export_onnx(net, describe("p4", {}, image_size=64), tmp_path / "p4.onnx")
    runner = onnx_runner(tmp_path / "p4.onnx")
    assert runner.tasks == ("demakeup", "sr") and runner.image_size == 64
    x = torch.rand(2, 3, 40, 72, generator=torch.Generator().manual_seed(2))  # padded to 64 x 96 by the runner
    got, want = runner(x), torch_runner(net)(x)
    assert got["sr"].shape == (2, 3, 160, 288)
    for task in runner.tasks:
        assert (got[task] - want[task]).abs().max() <= 1e-3
