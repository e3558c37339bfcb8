"""Speed work keeps the function: formulations of the blocks, the reference network, `demakeup bench`."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from demakeup_dist.bench.config import BenchConfig
from demakeup_dist.bench.gate import Gate
from demakeup_dist.bench.results import Results, Row, add_ratios, data_line
from demakeup_dist.bench.run import run_train
from demakeup_dist.bench.variants import VARIANTS
from demakeup_dist.data.bench_data import bench_data, hr_decode_rates
from demakeup_dist.data.loader import to_float
from demakeup_dist.data.shards import write_shards
from demakeup_dist.models import build_model
from demakeup_dist.models.layers import InstanceNorm2d, SRHead, default_impl, implementation
from demakeup_dist.models.reference_arch import build_reference
from demakeup_dist.train.recipe import restoration_loss
from demakeup_dist.train.step import ModelLoss
from launcher import bench_cli


pytestmark = pytest.mark.usefixtures("one_thread")


def _grads(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.detach().clone().requires_grad_()
    out = module(x)
    grads = torch.autograd.grad((out.float() * weight).sum(), [x, *module.parameters()])
    return out.detach(), list(grads)


# ---- InstanceNorm2d formulations -----------------------------------------------------------


@pytest.mark.parametrize("impl", ["native", "reductions", "auto"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_formulations_match_torch(impl: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 6) * 3 + 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ours, ref = InstanceNorm2d(5, impl=impl), nn.InstanceNorm2d(5, affine=True)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(5))
        ours.bias.copy_(torch.randn(5))
    ref.load_state_dict(ours.state_dict())
    g = torch.randn(2, 5, 8, 6)
    (y, grads), (y_ref, grads_ref) = _grads(ours, x, g), _grads(ref, x, g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_instance_norm_keeps_bf16() -> None:
    x = torch.randn(2, 4, 8, 8).bfloat16().to(memory_format=torch.channels_last)
    for impl in ("native", "reductions"):
        assert InstanceNorm2d(4, impl=impl)(x).dtype == torch.bfloat16


def _traced_ops(module: nn.Module, x: torch.Tensor) -> str:
    """The ops torch.compile's tracer records for module(x) (no code generation)."""
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, _inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(module, backend=backend, fullgraph=True)(x)
    torch._dynamo.reset()
    return "\n".join(str(g.graph) for g in graphs)


def test_auto_norm_is_native_eagerly_and_reductions_when_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    norm, x = InstanceNorm2d(4, impl="auto"), torch.randn(2, 4, 8, 8)
    assert "var_mean" in _traced_ops(norm, x)
    assert "instance_norm" in _traced_ops(InstanceNorm2d(4, impl="native"), x)
    called = []
    monkeypatch.setattr(InstanceNorm2d, "_native", lambda self, t: called.append(1) or t)
    norm(x)
    assert called  # eager mode took the native kernel


# ---- choosing formulations -------------------------------------------------------------------


def test_implementation_sets_defaults_for_modules_built_inside() -> None:
    assert default_impl("norm") == "auto"
    with implementation(norm="reductions", sr_head="layered"):
        model = build_model("p4")
    assert {m.impl for m in model.modules() if isinstance(m, InstanceNorm2d)} == {"reductions"}
    assert default_impl("norm") == "auto" and default_impl("sr_head") == "composed"  # restored


def test_environment_does_not_choose_formulations(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's numerics come from its recorded config and the code, never from unrecorded variables."""
    for variable, value in (("DEMAKEUP_NORM", "native"), ("DEMAKEUP_SR_HEAD", "layered")):
        monkeypatch.setenv(variable, value)
    assert (InstanceNorm2d(3).impl, SRHead(16).impl) == ("auto", "composed")


def test_bad_formulation_names_raise() -> None:
    with pytest.raises(ValueError, match="norm='fused'"), implementation(norm="fused"):
        pass
    with pytest.raises(ValueError, match="impl='x'"):
        SRHead(16, impl="x")


# ---- SR head --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_composed_sr_head_is_the_layered_function(channels_last: bool) -> None:
    torch.manual_seed(0)
    layered, composed = SRHead(16, impl="layered"), SRHead(16, impl="composed")
    for p in layered.parameters():
        nn.init.normal_(p, std=0.3)  # biases too: they enter the composed bias differently per pixel
    composed.load_state_dict(layered.state_dict())
    assert list(composed.state_dict()) == list(nn.Sequential(*layered).state_dict())  # checkpoints unchanged
    y = torch.randn(2, 16, 4, 6)
    if channels_last:
        y = y.to(memory_format=torch.channels_last)
    g = torch.randn(2, 3, 16, 24)
    (out_l, grads_l), (out_c, grads_c) = _grads(layered, y, g), _grads(composed, y, g)
    assert out_c.shape == (2, 3, 16, 24)
    torch.testing.assert_close(out_c, out_l, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_c, grads_l):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_composed_sr_head_under_bf16_autocast() -> None:
    head, y = SRHead(16), torch.randn(1, 16, 4, 4)
    exact = head(y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(y)
    assert low.dtype == torch.bfloat16
    assert (low.float() - exact).abs().max() < 0.05 * exact.abs().max()
    assert head.bfloat16()(y.bfloat16()).dtype == torch.bfloat16  # a bf16 model without autocast


def test_formulations_compile_without_graph_breaks() -> None:
    """fullgraph=True: the composed head and the auto norm trace as one graph."""
    torch._dynamo.reset()
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), InstanceNorm2d(16), SRHead(16))
    x = torch.rand(1, 3, 8, 8)
    out = torch.compile(net, backend="aot_eager", fullgraph=True)(x)
    out.sum().backward()
    torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


# ---- the reference network -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p3", "p4"])
def test_reference_is_the_same_network(name: str) -> None:
    torch.manual_seed(0)
    ours, ref = build_model(name), build_reference(name)
    ref.load_state_dict(ours.state_dict())  # same parameter names and shapes
    assert ref.tasks == ours.tasks
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out, out_ref = ours(x), ref(x)
    for k in out:
        torch.testing.assert_close(out[k], out_ref[k], atol=1e-5, rtol=1e-5)


def test_reference_refuses_other_models() -> None:
    with pytest.raises(ValueError, match="p3 and p4, not 'p1'"):
        build_reference("p1")


# ---- the train step ----------------------------------------------------------------------


def test_model_loss_with_uint8_inputs_and_targets_equals_the_float_loss() -> None:
    torch.manual_seed(0)
    model = build_model("p4")
    raw = {"makeup": torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8),
           "demakeup": torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8),
           "sr": torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8)}
    floats = to_float(raw, "cpu")
    weights = {"demakeup": 1.0, "sr": 0.5}
    x, targets = raw.pop("makeup"), raw
    fused = ModelLoss(model, weights, 100.0)(x, targets)
    plain, _ = restoration_loss(model(floats.pop("makeup")), floats, weights, 100.0)
    torch.testing.assert_close(fused, plain, rtol=0, atol=0)
    assert ModelLoss(model, weights, 100.0)(to_float({"x": x}, "cpu")["x"], floats) == fused
    assert ModelLoss(model, weights, 100.0)(x)["sr"].shape == (1, 3, 128, 128)  # no targets: the outputs


# ---- run_train -------------------------------------------------------------------------------


TINY = BenchConfig.for_device("cpu", batch=2, size=64, steps=1, warmup=1)  # the reference needs 64


def test_run_train_times_ours_against_the_reference() -> None:
    seen: list[Row] = []
    rows = run_train(["p3"], ["reference", "ours", "ours-ckpt-decoder"], TINY, on_row=seen.append)
    assert [(r.variant, r.feed) for r in rows] == [("reference", "memory"), ("ours", "memory"),
                                                   ("ours-ckpt-decoder", "memory")]
    assert seen == rows
    ref, ours, bad = rows
    assert ref.img_per_s > 0 and ours.img_per_s > 0 and ref.error is None
    assert ref.ratio_reference == 1.0
    assert ours.ratio_reference == pytest.approx(ours.img_per_s / ref.img_per_s)
    assert ours.peak_mem_gb is None and ours.data_wait is None  # CPU, memory feed
    # p3 has no checkpoint_decoder option: that case fails alone, with the reason.
    assert bad.img_per_s is None and "checkpoint_decoder" in bad.error


def test_run_train_from_shards(tmp_path: Path, make_dataset) -> None:
    shards = tmp_path / "shards"
    write_shards(make_dataset(tmp_path, n={"train": 4, "val": 1, "test": 1}, size=32), shards, workers=1,
                 progress=False)
    config = BenchConfig.for_device("cpu", batch=2, size=32, steps=2, warmup=1, num_workers=1,
                                          grad_checkpointing=True)
    rows = run_train(["p4"], ["ours"], config, feeds=("memory", "shards"), shards=shards)
    memory, shard = rows
    assert memory.mode == "eager+ckpt" and shard.feed == "shards"
    assert 0 <= shard.data_wait <= 1
    assert shard.ratio_memory == pytest.approx(shard.img_per_s / memory.img_per_s)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"variants": ["fastest"]}, "unknown variant or feed fastest"),
    ({"models": ["p1"], "variants": ["reference"]}, "p3 and p4 only, not p1"),
    ({"feeds": ("memory", "shards")}, "needs a shard folder"),
    ({"config": BenchConfig.for_device("cpu", size=48)}, "--size 48"),
    ({"config": BenchConfig.for_device("cpu", warmup=0)}, "--warmup 0"),
    ({"config": BenchConfig.for_device("cpu", precision="fp8")}, "--precision 'fp8'"),
])
def test_run_train_rejects_bad_requests(kwargs: dict, message: str) -> None:
    args = {"models": ["p3"], "variants": ["ours"], "config": TINY} | kwargs
    with pytest.raises(ValueError, match=message):
        run_train(args["models"], args["variants"], args["config"], feeds=args.get("feeds", ("memory",)))


def test_add_ratios_pairs_like_with_like() -> None:
    rows = [Row("p4", "reference", "compile", "memory", img_per_s=100.0),
            Row("p4", "ours", "compile", "memory", img_per_s=150.0),
            Row("p4", "ours", "compile", "shards", img_per_s=120.0),
            Row("p4", "ours", "eager", "memory", img_per_s=90.0),
            Row("p4", "ours", "compile+ckpt", "memory", img_per_s=130.0),
            Row("p4", "ours", "compile", "memory", error="boom")]
    add_ratios(rows)
    assert [r.ratio_reference for r in rows] == [1.0, 1.5, 1.2, None, 1.3, None]
    assert rows[2].ratio_memory == pytest.approx(0.8)
    assert rows[1].ratio_memory is None


# ---- the gate of concurrent benchmark processes ----------------------------------------------


def test_gate_waits_for_every_party_then_serialises(tmp_path: Path) -> None:
    order: list[str] = []
    ready: list[bool | None] = []

    def party(name: str) -> None:
        with Gate(tmp_path, parties=2, timeout_s=30) as gate:
            gate.enter()  # both wait for each other, then one at a time holds the lock
            order.append(f"{name} in")
            time.sleep(0.2)  # room for the other to barge in, were the lock not exclusive
            order.append(f"{name} out")
            ready.append(gate.all_ready)

    threads = [threading.Thread(target=party, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert ready == [True, True]


def test_gate_counts_failed_parties_and_times_out(tmp_path: Path) -> None:
    with Gate(tmp_path, parties=2, timeout_s=30):
        pass  # a process that failed before enter()
    with Gate(tmp_path, parties=2, timeout_s=30) as gate:
        gate.enter()
        assert gate.all_ready
    with Gate(tmp_path / "other", parties=5, timeout_s=0.5) as lonely:
        lonely.enter()
        assert lonely.all_ready is False


# ---- `demakeup bench` ------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    bench_cli.register(app)
    app.command("noop")(lambda: None)
    return app


def test_bench_command_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(_cli(), ["bench", "train", "--device", "cpu", "--models", "p3", "--size", "64",
                                         "--steps", "1", "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "p3     reference  eager  memory" in result.output
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["rows"]] == ["reference", "ours"]
    assert data["config"]["batch"] == 2 and data["machine"]["torch"] == torch.__version__


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "fast"], "WHAT 'fast': choose one of train, data, all"),
    (["bench", "train", "--models", "p9"], "--models 'p9': use a comma-separated list of p1, p2, p3, p4"),
    (["bench", "train", "--variants", "ours,turbo"], "--variants 'ours,turbo'"),
    (["bench", "train", "--device", "cpu", "--size", "100"], "--size 100"),
    (["bench", "train", "--device", "tpu"], "Invalid value for '--device'"),  # Typer checks the choices
    (["bench", "data", "--device", "cpu", "--shards", "/nonexistent/shards"], "/nonexistent/shards"),
])
def test_bench_command_rejects_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 2
    assert message in result.output


def test_bench_command_fails_when_a_case_fails() -> None:
    result = CliRunner().invoke(_cli(), ["bench", "train", "--device", "cpu", "--models", "p3", "--size", "32",
                                         "--steps", "1", "--variants", "ours-ckpt-decoder"])
    assert result.exit_code == 1
    assert "FAILED ValueError" in result.output


def test_every_variant_offered_computes_the_default_network() -> None:
    """The variants differ in speed only: each one `--help` lists, given the default network's parameters,
    gives its outputs (else "x ref" and the variant rows would compare different work)."""
    offered = re.sub(r"[\s│]+", "", CliRunner().invoke(_cli(), ["bench", "--help"]).output)
    torch.manual_seed(0)
    default = VARIANTS["ours"].build("p4").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = default(x)
    for name, variant in VARIANTS.items():
        assert name in offered
        net = variant.build("p4").eval()
        net.load_state_dict(default.state_dict())
        with torch.no_grad():
            out = net(x)
        assert out.keys() == expected.keys(), name
        for key in out:
            torch.testing.assert_close(out[key], expected[key], atol=1e-5, rtol=1e-5,
                                       msg=lambda m, case=f"variant {name}, {key}": f"{case}: {m}")


def test_merge_tables_runs_made_side_by_side(tmp_path: Path) -> None:
    """scripts/gpu_bench.sh: each process writes its own file; the merge pairs a row with the reference
    timed by another process, and the merged JSON holds the rows it prints."""
    runs = tmp_path / "runs"
    config = BenchConfig.for_device("cpu")
    for name, rows in (("ref", [Row("p4", "reference", "eager", "memory", img_per_s=100.0)]),
                       ("ours", [Row("p4", "ours", "eager", "memory", img_per_s=150.0),
                                 Row("p4", "ours-layered", "eager", "memory", error="RuntimeError: out of memory")])):
        results = Results.start(config, [r.variant for r in rows], f"demakeup bench --json {name}.json")
        results.rows = rows
        results.save(runs / f"{name}.json")
    (runs / "killed.json").write_text("{")
    out = tmp_path / "merged.json"
    result = CliRunner().invoke(_cli(), ["bench", "--merge", str(runs), "--json", str(out)])
    assert result.exit_code == 1, result.output  # a failed row
    table = [line.split() for line in result.output.splitlines() if line.startswith("p4 ") and "FAILED" not in line]
    assert table == [["p4", "reference", "eager", "memory", "100.0", "-", "-", "-", "1.00", "-"],
                     ["p4", "ours", "eager", "memory", "150.0", "-", "-", "-", "1.50", "-"],
                     ["p4", "ours-layered", "eager", "memory", "-", "-", "-", "-", "-", "-"]]
    assert "p4 ours-layered eager memory: FAILED RuntimeError: out of memory" in result.output
    assert "unreadable: killed" in result.output
    merged = json.loads(out.read_text())
    assert [(r["variant"], r["ratio_reference"]) for r in merged["rows"]] == [
        ("reference", 1.0), ("ours", 1.5), ("ours-layered", None)]
    assert set(merged["runs"]) == {"ours", "ref"} and set(merged["unreadable"]) == {"killed"}


def test_hr_decode_rates_on_a_cpu(tmp_path: Path, make_dataset) -> None:
    shards = tmp_path / "shards"
    write_shards(make_dataset(tmp_path, n={"train": 3, "val": 1, "test": 1}, size=32), shards, workers=1,
                 progress=False)
    rates = hr_decode_rates(shards, "cpu", count=4)
    assert rates["cpu_per_s"] > 0 and rates["jpeg_kib_mean"] > 0
    assert rates["nvjpeg_missing"] == "no CUDA device"
    line = data_line({**bench_data(shards, batch_size=1), "hr_decode": rates}, 1)
    assert "/s on one CPU core, no nvJPEG (no CUDA device)" in line


def test_old_option_spellings_still_work_and_say_so() -> None:
    result = CliRunner().invoke(_cli(), ["bench", "train", "--device", "cpu", "--batch", "0", "--model", "p3"])
    assert result.exit_code == 2
    assert "--batch is deprecated: use --batch-size" in result.stderr
    assert "--batch-size 0: must be at least 1" in result.stderr  # the old spelling's value was used
    result = CliRunner().invoke(_cli(), ["bench", "train", "--device", "cpu", "--model", "p9"])
    assert "--model is deprecated: use --models" in result.stderr
    assert "--models 'p9'" in result.stderr
