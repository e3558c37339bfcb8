"""The four networks (demakeup_dist.models): contracts, structure, gradients, training, tooling."""

from __future__ import annotations

import tempfile

import pytest
import torch
import torch.nn.functional as F
import typer
from torch import nn
from typer.testing import CliRunner

from demakeup_dist.models import MODEL_NAMES, build_model, model_options
from demakeup_dist.models.layers import InstanceNorm2d, OutputActivation, UpBlock
from demakeup_dist.models.profile import profile_model, saved_activation_bytes
from demakeup_dist.models.resnet34_arch import ResNet34Encoder
from launcher import models_cli


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(batch: int, h: int, w: int | None = None, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, h, w or h, generator=torch.Generator().manual_seed(seed))


def _loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(o.mean() for o in out.values())  # type: ignore[return-value]


# ---- InstanceNorm --------------------------------------------------------------------------


def test_instance_norm_matches_torch_values_and_gradients() -> None:
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 7, 9) * 3 + 1).requires_grad_()
    ours = InstanceNorm2d(5)
    ref = nn.InstanceNorm2d(5, affine=True, eps=1e-5)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(5))
        ours.bias.copy_(torch.randn(5))
    ref.load_state_dict(ours.state_dict())
    x2 = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x2)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-4, rtol=1e-4)


def test_instance_norm_keeps_dtype_and_channels_last() -> None:
    x = torch.randn(2, 8, 16, 16).to(memory_format=torch.channels_last)
    norm = InstanceNorm2d(8)
    y = norm(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y_bf16 = norm(x.bfloat16())
    assert y_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf16.float(), y, atol=0.05, rtol=0.02)


# ---- shapes, contract, structure -----------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_dtype_and_range_at_64(name: str) -> None:
    model = build_model(name)
    out = model(_images(2, 64, 96))  # non-square: fully convolutional
    assert tuple(out) == model.tasks
    assert out["demakeup"].shape == (2, 3, 64, 96)
    if "sr" in model.tasks:
        assert out["sr"].shape == (2, 3, 256, 384)
    for o in out.values():
        assert o.dtype == torch.float32 and 0 <= o.min() and o.max() <= 1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_at_224(name: str) -> None:
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(_images(1, 224))
    expected = {"demakeup": (1, 3, 224, 224), "sr": (1, 3, 896, 896)}
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: expected[k] for k in model.tasks}
    assert model.tasks == (("demakeup", "sr") if name == "p4" else ("demakeup",))


_ALLOWED_LEAVES = (nn.Conv2d, nn.ConvTranspose2d, InstanceNorm2d, nn.GELU, nn.MaxPool2d, nn.ZeroPad2d,
                   nn.Identity, OutputActivation)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_only_gelu_and_instance_norm(name: str) -> None:
    leaves = [m for m in build_model(name).modules() if not list(m.children())]
    unexpected = {type(m).__name__ for m in leaves if not isinstance(m, _ALLOWED_LEAVES)}
    assert not unexpected  # no BatchNorm, ReLU, torch's InstanceNorm, ...
    assert any(isinstance(m, nn.GELU) and m.approximate == "none" for m in leaves)
    assert any(isinstance(m, InstanceNorm2d) for m in leaves)


@pytest.mark.parametrize("size", [224, 64])
def test_encoder_feature_sizes(size: int) -> None:
    with torch.no_grad():
        features = ResNet34Encoder()(_images(1, size))
    channels = (64, 64, 128, 256, 512)
    assert [tuple(f.shape) for f in features] == [(1, c, size // r, size // r)
                                                  for c, r in zip(channels, (2, 4, 8, 16, 32))]


def _decoder_block_inputs(model: nn.Module, x: torch.Tensor) -> tuple[list, list[tuple]]:
    """(encoder features, positional inputs of each UpBlock in call order), via hooks."""
    features: list = []
    calls: list[tuple] = []
    model.encoder.register_forward_hook(lambda m, args, out: features.extend(out))
    for m in model.modules():
        if isinstance(m, UpBlock):
            m.register_forward_pre_hook(lambda m, args: calls.append(args))
    with torch.no_grad():
        model(x)
    return features, calls


def test_p2_decoder_sees_only_the_bridge() -> None:
    features, calls = _decoder_block_inputs(build_model("p2"), _images(1, 64))
    assert len(calls) == 5
    assert calls[0][0] is features[-1]  # the bridge, conv5_3
    for args in calls:
        assert len(args) == 1 or args[1] is None
        assert not any(args[0] is f for f in features[:-1])


def test_p3_decoder_receives_all_five_skips() -> None:
    x = _images(1, 64)
    features, calls = _decoder_block_inputs(build_model("p3"), x)
    assert len(calls) == 5
    assert calls[0][0] is features[-1]
    skips = [args[1] for args in calls]
    for skip, feature in zip(skips[:4], reversed(features[:-1])):  # conv4_6, conv3_4, conv2_3, conv1
        assert skip is feature
    assert skips[4].shape == (1, 64, 64, 64)  # full-resolution conv of the input
    assert not any(skips[4] is f for f in features)


# ---- gradients, checkpointing, DDP ---------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_parameter_gets_a_finite_gradient(name: str) -> None:
    model = build_model(name)
    _loss(model(_images(2, 64))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def _outputs_and_grads(model: nn.Module, x: torch.Tensor) -> tuple[dict, dict]:
    out = model(x)
    _loss(out).backward()
    return {k: v.detach() for k, v in out.items()}, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(("name", "flags"), [
    ("p4", {"grad_checkpointing": True}),
    ("p4", {"grad_checkpointing": True, "checkpoint_decoder": True}),
    ("p3", {"grad_checkpointing": True}),
])
def test_checkpointing_gives_the_same_outputs_and_gradients(name: str, flags: dict) -> None:
    x = _images(1, 64)
    plain = build_model(name)
    ckpt = build_model(name, **flags)
    ckpt.load_state_dict(plain.state_dict())
    out_p, grad_p = _outputs_and_grads(plain, x)
    out_c, grad_c = _outputs_and_grads(ckpt, x)
    for k in out_p:
        torch.testing.assert_close(out_c[k], out_p[k], atol=1e-6, rtol=1e-6)
    for n in grad_p:
        torch.testing.assert_close(grad_c[n], grad_p[n], atol=1e-6, rtol=1e-5)
    # ...and it does save memory: fewer tensors are kept for backward.
    assert saved_activation_bytes(ckpt, x) < 0.9 * saved_activation_bytes(plain, x)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_ddp_accepts_every_model(name: str) -> None:
    """DDP (find_unused_parameters=False) fails on the second step if a parameter went unused."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with tempfile.NamedTemporaryFile() as store:
        dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
        try:
            model = DistributedDataParallel(build_model(name, grad_checkpointing=True))
            for _ in range(2):
                _loss(model(_images(1, 64))).backward()
        finally:
            dist.destroy_process_group()


# ---- precision, layout, compile ------------------------------------------------------------


def test_bf16_autocast_and_channels_last() -> None:
    model = build_model("p4")
    x = _images(1, 64)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(x)
    for k in ref:
        torch.testing.assert_close(out_cl[k], ref[k], atol=1e-4, rtol=1e-4)
        assert out_bf16[k].dtype == torch.float32  # the output activation runs in float32
        assert (out_bf16[k] - ref[k]).abs().max() < 0.05


@pytest.mark.parametrize(("backend", "name", "flags"), [
    ("aot_eager", "p3", {}),
    pytest.param("aot_eager", "p4", {"grad_checkpointing": True, "checkpoint_decoder": True}, marks=pytest.mark.slow),
    pytest.param("inductor", "p3", {}, marks=pytest.mark.slow),
])
def test_torch_compile_full_graph(backend: str, name: str, flags: dict) -> None:
    """fullgraph=True: the size check and checkpointing cause no graph break (forward + backward)."""
    torch._dynamo.reset()
    model = build_model(name, **flags)
    x = _images(1, 64)
    out = torch.compile(model, backend=backend, fullgraph=True)(x)
    _loss(out).backward()
    for k, v in model(x).items():
        torch.testing.assert_close(out[k], v, atol=1e-5, rtol=1e-5)


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3, 64, 48), (1, 3, 100, 64)])
def test_sides_not_multiple_of_32_raise_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"{shape[2]} x {shape[3]}: sides must be multiples of 32; pad"):
        build_model("p3")(torch.rand(shape))


def test_wrong_channel_count_raises() -> None:
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        build_model("p1")(torch.rand(1, 1, 64, 64))


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'p5'; valid models: p1, p2, p3, p4"):
        build_model("p5")


@pytest.mark.parametrize(("name", "override"), [("p1", "decoder_channels"), ("p2", "head_channels"),
                                                ("p3", "sr_head"), ("p4", "skips")])
def test_unknown_override_lists_valid_options(name: str, override: str) -> None:
    with pytest.raises(ValueError, match=f"no option.* {override}; valid options") as info:
        build_model(name, **{override: 1})
    for option in model_options(name):
        assert option in str(info.value)


@pytest.mark.parametrize("overrides", [{"decoder_channels": (256, 128)}, {"decoder_channels": (256, 128, 64, 0, 16)},
                                       {"out_activation": "tanh"}])
def test_bad_override_values_raise(overrides: dict) -> None:
    with pytest.raises(ValueError):
        build_model("p3", **overrides)


def test_overrides_change_the_network() -> None:
    narrow = build_model("p3", decoder_channels=[128, 64, 32, 16, 8])  # a YAML list is fine
    assert narrow.decoder.blocks[-1].up.out_channels == 8
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in build_model("p3").parameters())
    raw = build_model("p1", base_channels=8, depth=2, out_activation="identity")
    assert raw(_images(1, 32))["demakeup"].shape == (1, 3, 32, 32)


# ---- training: each model overfits one batch -----------------------------------------------

# Steps to reach a 10x lower loss, measured with this setup (AdamW lr 2e-3, 2 random smooth 64x64
# targets) and seeds 0-2: p1 15-18, p2 27-36, p3 24-30, p4 50-68. 150 leaves 2x margin over the
# slowest; the loop stops as soon as the loss is 10x lower, so the bound costs nothing when met.
OVERFIT_MAX_STEPS = 150


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_overfits_one_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name)
    x = F.interpolate(_images(2, 8, seed=1), size=(64, 64), mode="bilinear")
    target = F.interpolate(_images(2, 16, seed=2), size=(64, 64), mode="bilinear")
    targets = {"demakeup": target, "sr": F.interpolate(target, scale_factor=4, mode="bilinear")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = None
    for _ in range(OVERFIT_MAX_STEPS):
        out = model(x)
        loss = sum(100 * F.mse_loss(out[k], targets[k]) for k in model.tasks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first or loss.item()
        if loss.item() < first / 10:
            break
    assert loss.item() < first / 10, f"{name}: loss {first:.3f} -> {loss.item():.3f}"


# ---- profile and `demakeup models` ---------------------------------------------------------


def test_profile_matches_a_real_run() -> None:
    p = profile_model("p3", size=64, batch=2, dtype=torch.float32)
    model = build_model("p3")
    assert p.parameters == sum(q.numel() for q in model.parameters())
    assert p.activation_bytes == saved_activation_bytes(model, _images(2, 64))
    assert 2.5 < p.gflops_train / p.gflops_forward < 3.5  # backward costs ~2 forwards
    p4 = profile_model("p4", size=64, batch=2)
    assert p4.outputs == {"demakeup": (3, 64, 64), "sr": (3, 256, 256)}
    assert p4.activation_bytes_checkpointed < 0.8 * p4.activation_bytes
    assert p4.gflops_train_checkpointed > p4.gflops_train  # the SR head runs twice


def _cli() -> typer.Typer:
    app = typer.Typer()
    models_cli.register(app)
    app.command("noop")(lambda: None)  # with a single command typer would drop the command name
    return app


def test_models_command_prints_the_table() -> None:
    result = CliRunner().invoke(_cli(), ["models", "--size", "64", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in MODEL_NAMES:
        assert any(line.startswith(f"{name} ") for line in lines)
    assert "sr 3x256x256" in result.output


def test_models_command_takes_the_old_batch_spelling_and_says_so() -> None:
    result = CliRunner().invoke(_cli(), ["models", "--size", "64", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "--batch is deprecated: use --batch-size" in result.stderr
    assert "activation memory at batch 2," in result.stdout


@pytest.mark.parametrize("args", [["--size", "100"], ["--dtype", "fp16"], ["--batch-size", "0"]])
def test_models_command_rejects_bad_options(args: list[str]) -> None:
    result = CliRunner().invoke(_cli(), ["models", *args])
    assert result.exit_code == 2
    assert args[0] in result.output


@pytest.mark.parametrize("name", ["p1", "p2", "p3", "p4"])
def test_model_tasks_matches_built_model(name):
    from demakeup_dist.models import model_tasks

    assert model_tasks(name) == build_model(name).tasks


@pytest.mark.parametrize("name", ["p1", "p2", "p3", "p4"])
def test_residual_network_starts_as_identity(name):
    from demakeup_dist.metrics import bicubic_upsample
    from demakeup_dist.models.layers import RESIDUAL_EPS

    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    out = build_model(name, residual=True).eval()(x)
    expected = x.clamp(RESIDUAL_EPS, 1 - RESIDUAL_EPS)
    torch.testing.assert_close(out["demakeup"], expected, atol=1e-5, rtol=0)
    if name == "p4":
        sr_base = bicubic_upsample(x, scale=4).clamp(RESIDUAL_EPS, 1 - RESIDUAL_EPS)
        torch.testing.assert_close(out["sr"], sr_base, atol=1e-5, rtol=0)
    plain = build_model(name).eval()(x)["demakeup"]
    assert (plain - x).abs().mean() > 0.05  # the brief's network does not start at its input


def test_residual_network_still_learns_every_parameter():
    model = build_model("p4", residual=True)
    out = model(torch.rand(1, 3, 64, 64))
    (out["demakeup"].mean() + out["sr"].mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
