"""`demakeup bench`: train-step and input-pipeline throughput, against a straightforward reference."""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from launcher.errors import UserError, user_errors

WHAT = ("train", "data", "all")
HELP = (
    "Time the train step of the networks and compare it with a straightforward PyTorch version of "
    "the same network, timed in the same run.\n\n"
    "train: synthetic batches already on the device (pure compute). data: the same steps fed from "
    "shards by the training loop's own data feed (--data-cache as in `demakeup train`; shards made "
    "on the fly from synthetic faces unless --shards is given), with the fraction of time spent "
    "waiting for data, plus the streaming reader's decode rate per worker and bytes read per rank "
    "per epoch. all: both.\n\n"
    "A step is exactly `demakeup train`'s: the network and the brief's loss in one (compilable) "
    "module fed uint8 batches, backward, clip, AdamW (fused on CUDA), LR schedule; on CUDA with "
    "bf16 autocast and channels_last. Defaults: on CUDA the brief's batch 64 at 224 px, 20 timed "
    "steps after 5 warm-up steps; on CPU a tiny batch 2 at 64 px so it ends in seconds.\n\n"
    "Variants: reference = plain nn.InstanceNorm2d / nn.GELU network in the same step; ours = the "
    "project's network (what `demakeup train` runs); see --variants for the rest. "
    "docs/performance.md explains them and has the measured numbers."
)


def _names(option: str, value: str, valid: tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UserError(f"{option} {value!r}: choose from {', '.join(valid)} (comma separated)")
    return names


def format_table(rows: list[Any]) -> str:
    """Bench rows (demakeup_dist.bench.Row) as an aligned table; "-": not applicable or not measured."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = ["model", "variant", "mode", "feed", "img/s", "step ms", "peak GB", "data-wait", "x ref", "x memory"]
    body = [[r.model, r.variant, r.mode, r.feed, num(r.img_per_s, ".1f"), num(r.step_ms, ".1f"),
             num(r.peak_mem_gb, ".2f"), num(r.data_wait, ".1%"), num(r.ratio_reference, ".2f"),
             num(r.ratio_memory, ".2f")] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{r.model} {r.variant} {r.mode} {r.feed}: FAILED {r.error}" for r in rows if r.error]
    return "\n".join(lines)


def bench(
    what: Annotated[str, typer.Argument(help="train, data or all (see above).")] = "all",
    model: Annotated[str, typer.Option(help="Networks, comma separated (the reference exists for p3, p4).")] = "p3,p4",
    variants: Annotated[str, typer.Option(help="Comma separated: reference, ours, "
                                               "ours-reductions, ours-native (InstanceNorm formulations), "
                                               "ours-layered (SR head layer by layer), ours-ckpt-decoder.")
                        ] = "reference,ours",
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when available).")] = "auto",
    batch: Annotated[Optional[int], typer.Option(help="Images per step.", show_default="64 cuda, 2 cpu")] = None,
    size: Annotated[Optional[int], typer.Option(help="Input side (multiple of 32); SR targets are 4x.",
                                                show_default="224 cuda, 64 cpu")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Timed steps per case.", show_default="20 cuda, 3 cpu")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed steps first (torch.compile compiles here).",
                                                  show_default="5 cuda, 1 cpu")] = None,
    precision: Annotated[Optional[str], typer.Option(help="bf16 (autocast) or fp32.",
                                                     show_default="bf16 cuda, fp32 cpu")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the step's module.")
                       ] = False,
    compile_mode: Annotated[str, typer.Option(help="torch.compile mode (as `demakeup train --compile-mode`): "
                                                   "default, reduce-overhead, max-autotune, "
                                                   "max-autotune-no-cudagraphs.")] = "default",
    data_cache: Annotated[str, typer.Option(help="Data path of the shards feed (as `demakeup train --data-cache`): "
                                                 "auto, device, host or off (stream from the shards).")] = "auto",
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing/--no-grad-checkpointing",
                                                     help="Build our networks with grad_checkpointing=True.")
                                  ] = False,
    cudnn_benchmark: Annotated[bool, typer.Option("--cudnn-benchmark/--no-cudnn-benchmark",
                                                  help="Let cuDNN time its kernels for these shapes.")] = True,
    shards: Annotated[Optional[Path], typer.Option(help="Shard folder for data / all (default: synthesise one).")
                      ] = None,
    shard_samples: Annotated[Optional[int], typer.Option(help="Triplets to synthesise when --shards is not given.",
                                                         show_default="batch x min(warmup + steps, 5)")] = None,
    num_workers: Annotated[int, typer.Option(help="Loader worker processes for the shards feed.")] = 2,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results to this JSON file.")
                         ] = None,
    gate: Annotated[Optional[Path], typer.Option(help="Shared folder of benchmark processes run at the same time "
                                                      "on one GPU (scripts/gpu_bench.sh): they compile together, "
                                                      "then time one at a time.")] = None,
    gate_parties: Annotated[int, typer.Option(help="Number of processes sharing --gate.")] = 1,
    gate_timeout: Annotated[float, typer.Option(help="Seconds to wait for the other --gate processes.")] = 300.0,
) -> None:
    """Time train steps (help text above)."""
    with user_errors():
        if what not in WHAT:
            raise UserError(f"{what!r}: choose train, data or all")
        import torch

        from demakeup_dist import bench as b

        resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        config = b.BenchConfig.for_device(resolved, batch=batch, size=size, steps=steps, warmup=warmup,
                                          precision=precision, compile=compile, compile_mode=compile_mode,
                                          grad_checkpointing=grad_checkpointing, cudnn_benchmark=cudnn_benchmark,
                                          num_workers=num_workers, data_cache=data_cache)
        config.check()
        models = _names("--model", model, ("p1", "p2", "p3", "p4"))
        names = _names("--variants", variants, tuple(b.VARIANTS))
        if shard_samples is not None and shard_samples < config.batch:
            raise UserError(f"--shard-samples {shard_samples}: need at least one batch ({config.batch})")
        if shards is not None:
            from demakeup_dist.data.shards import load_manifest
            load_manifest(shards)  # a clear error now rather than one per case later
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    feeds = ("memory",) if what == "train" else ("memory", "shards")
    results: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "command": shlex.join(["demakeup", *sys.argv[1:]]),
                               "machine": b.machine_info(config.device), "config": asdict(config),
                               "variants": {n: b.VARIANTS[n].summary for n in names}, "rows": []}

    def on_row(row: Any) -> None:
        typer.echo(_progress(row))
        results["rows"].append(asdict(row))
        _save(json_path, results)  # rows so far survive a benchmark killed by a time limit

    gate_cm = b.Gate(gate, gate_parties, gate_timeout) if gate is not None else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="demakeup-bench-") as tmp, user_errors(), gate_cm:
        if what != "train" and shards is None:
            count = shard_samples or config.batch * min(config.warmup + config.steps, 5)
            typer.echo(f"synthesising {count} triplets at {config.size}px and packing them into shards ...")
            shards = b.make_shards(Path(tmp), config.size, count)
        rows = b.run_train(models, names, config, feeds=feeds, shards=shards,
                           gate=gate_cm if gate is not None else None, on_row=on_row)
        if what != "train":
            results["data"] = _data_rates(shards, config.batch)
        results["rows"] = [asdict(r) for r in rows]  # now with the ratios
        results["gate_all_ready"] = gate_cm.all_ready if gate is not None else None
        _save(json_path, results)
    typer.echo("")
    typer.echo(f"{config.device}: {results['machine']['gpu'] or results['machine']['cpu']}, batch {config.batch}, "
               f"{config.size} px, {config.precision}, {config.steps} timed steps after {config.warmup}")
    typer.echo(format_table(rows))
    if "data" in results:
        typer.echo(_data_line(results["data"], config.batch))
    if json_path is not None:
        typer.echo(f"wrote {json_path}")
    if any(r.error for r in rows):
        raise typer.Exit(1)


def _progress(row: Any) -> str:
    if row.error:
        return f"{row.model} {row.variant} {row.mode} {row.feed}: FAILED {row.error}"
    extra = f", peak {row.peak_mem_gb:.2f} GB" if row.peak_mem_gb is not None else ""
    extra += f", data-wait {row.data_wait:.1%}" if row.data_wait is not None else ""
    return f"{row.model} {row.variant} {row.mode} {row.feed}: {row.img_per_s:.1f} img/s{extra}"


def _data_line(data: dict[str, Any], batch: int) -> str:
    if "error" in data:
        return f"loader benchmark failed: {data['error']}"
    rates = data["read_samples_per_s_per_worker"]
    with_hr = f", {rates['with_hr']:.0f} with HR" if "with_hr" in rates else ""
    read = data["bytes_read_per_rank_per_epoch"]
    return (f"streaming reader (read + decode + batch of {batch}, 1 worker, {data['bytes_per_triplet'] / 1024:.0f} "
            f"KiB per triplet): {rates['without_hr']:.0f} samples/s without HR{with_hr}; bytes read per rank "
            f"per epoch with {read['world_size']} ranks: {read['max_over_share']:.2f}x its share at most")


def _save(path: Path | None, results: dict[str, Any]) -> None:
    if path is not None:
        from demakeup_dist import atomic
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, results)


def _data_rates(shards: Path, batch: int) -> dict[str, Any]:
    """The data engine's own benchmark (read + decode + batch per worker) on the same shards."""
    from demakeup_dist.data.bench_data import bench_data
    try:
        return bench_data(shards, batch_size=batch)
    except Exception as exc:  # the train rows above are still worth reporting
        return {"error": f"{type(exc).__name__}: {exc}"}


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(name="bench", help=HELP)(bench)
