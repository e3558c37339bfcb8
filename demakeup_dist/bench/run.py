"""Every case of a `demakeup bench` request, each failure costing only its own rows; the command end to end."""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from demakeup_dist.bench import FEEDS, WHATS
from demakeup_dist.bench.config import BenchConfig
from demakeup_dist.bench.gate import Gate
from demakeup_dist.bench.results import Results, Row, add_ratios, progress_line
from demakeup_dist.bench.timing import Case
from demakeup_dist.bench.variants import VARIANTS, check_models
from demakeup_dist.choices import check_choice

log = logging.getLogger(__name__)


def run_bench(what: str, models: Sequence[str], variants: Sequence[str], config: BenchConfig, *, command: str,
              shards: Path | None = None, shard_samples: int | None = None, gate: Gate | None = None,
              json_path: Path | None = None, echo: Callable[[str], Any] = print) -> Results:
    """`demakeup bench WHAT`: time every case, `echo` a line per row, return (and write to `json_path`) the results.

    Without `shards`, data and all synthesise `shard_samples` triplets into a temporary shard set. The
    JSON file is rewritten after every row, so the rows so far survive a run killed by a time limit.
    """
    check_choice("WHAT", what, WHATS)
    if shard_samples is not None and shard_samples < config.batch:
        raise ValueError(f"--shard-samples {shard_samples}: need at least one batch ({config.batch})")
    if shards is not None:
        from demakeup_dist.data.shards import load_manifest
        load_manifest(shards)  # a clear error now rather than one per case later
    results = Results.start(config, variants, command)

    def on_row(row: Row) -> None:
        echo(progress_line(row))
        results.rows.append(row)
        results.save(json_path)

    with tempfile.TemporaryDirectory(prefix="demakeup-bench-") as tmp, gate or contextlib.nullcontext():
        if what != "train" and shards is None:
            count = shard_samples or config.batch * min(config.warmup + config.steps, 5)
            echo(f"synthesising {count} triplets at {config.size}px and packing them into shards ...")
            shards = make_shards(Path(tmp), config.size, count)
        feeds = ("memory",) if what == "train" else FEEDS
        results.rows = run_train(models, variants, config, feeds=feeds, shards=shards, gate=gate, on_row=on_row)
        if what != "train":
            results.data = data_rates(shards, config)
        results.gate_all_ready = gate.all_ready if gate is not None else None
        results.save(json_path)
    return results


def run_train(models: Sequence[str], variants: Sequence[str], config: BenchConfig, *,
              feeds: Sequence[str] = ("memory",), shards: Path | None = None, gate: Gate | None = None,
              on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Time every (model, variant) on every feed and return the rows, ratios filled in.

    Bad names or options raise ValueError before anything runs. A case that fails while running
    (out of memory, a compile error) gives rows with `error` set and the other cases still run.
    `on_row` is called with each row as soon as it is timed (ratios are added at the end).
    """
    config.check()
    unknown = [v for v in variants if v not in VARIANTS] + [f for f in feeds if f not in FEEDS]
    if unknown:
        raise ValueError(f"unknown variant or feed {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; "
                         f"feeds: {', '.join(FEEDS)}")
    if "shards" in feeds and shards is None:
        raise ValueError("the shards feed needs a shard folder (make_shards makes a synthetic one)")
    check_models(models, variants)
    rows: list[Row] = []
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = config.cudnn_benchmark  # fixed shapes: let cuDNN pick its fastest kernels
    try:
        for model, variant in itertools.product(models, variants):
            for row in _bench_case(model, variant, config, feeds, shards, gate):
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    finally:
        torch.backends.cudnn.benchmark = previous
    add_ratios(rows)
    return rows


def _bench_case(model: str, variant: str, config: BenchConfig, feeds: Sequence[str], shards: Path | None,
                gate: Gate | None) -> list[Row]:
    mode = config.mode.removesuffix("+ckpt") if VARIANTS[variant].reference else config.mode  # no checkpointing
    rows = [Row(model, variant, mode, feed) for feed in feeds]
    if gate is not None and not config.compile:
        # Nothing slow to overlap with the others, and cuDNN's algorithm timing (first steps)
        # should not see their GPU work either.
        gate.enter()
    case = None
    try:
        log.info("%s %s %s: building, warming up for %d steps%s", model, variant, mode, config.warmup,
                 " (compiling)" if config.compile else "")
        case = Case(model, VARIANTS[variant], config)
        case.run(case.memory_batches(), config.warmup)
    except Exception as exc:  # one broken case must not cost the others' numbers
        log.exception("%s %s %s failed while warming up", model, variant, mode)
        for row in rows:
            row.error = _describe(exc)
        case = None
    finally:
        if gate is not None:
            if config.device == "cuda":
                torch.cuda.empty_cache()  # while waiting, hold no cached memory the timed process may need
            gate.enter()
    for row in rows if case is not None else ():
        try:
            case.measure(row, shards)
        except Exception as exc:
            log.exception("%s %s %s (%s feed) failed", model, variant, mode, row.feed)
            row.error = _describe(exc)
    del case
    gc.collect()
    if config.compile:
        torch._dynamo.reset()  # drops the compiled graphs (and the memory they hold) of this case
    if config.device == "cuda":
        torch.cuda.empty_cache()
    return rows


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def make_shards(folder: Path, size: int, samples: int, workers: int | None = None) -> Path:
    """Render `samples` synthetic training triplets (plus 1 val, 1 test) into FOLDER/data, pack FOLDER/shards."""
    from demakeup_dist.data.shards import write_shards
    from demakeup_dist.data.synth import synth_dataset

    data = synth_dataset(Path(folder) / "data", train=samples, val=1, test=1, size=size, workers=workers,
                         progress=False)
    write_shards(data, Path(folder) / "shards", workers=workers, progress=False)
    return Path(folder) / "shards"


def data_rates(shards: Path, config: BenchConfig) -> dict[str, Any]:
    """The data engine's own benchmark (read + decode + batch per worker, HR JPEG decode) on the same shards."""
    from demakeup_dist.data.bench_data import bench_data

    try:
        return bench_data(shards, batch_size=config.batch, device=config.device)
    except Exception as exc:  # the train rows are still worth reporting
        return {"error": _describe(exc)}
