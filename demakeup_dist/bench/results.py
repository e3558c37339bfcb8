"""What a `demakeup bench` run measured: rows, ratios, the JSON record, the printed text, merged runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demakeup_dist import atomic
from demakeup_dist.bench.variants import VARIANTS
from demakeup_dist.machine import machine_info
from demakeup_dist.text import table

if TYPE_CHECKING:
    from demakeup_dist.bench.config import BenchConfig


@dataclass
class Row:
    """One timed case. Rates are images per second; `error` is set (and numbers None) when it failed."""

    model: str
    variant: str
    mode: str
    feed: str
    img_per_s: float | None = None
    step_ms: float | None = None
    peak_mem_gb: float | None = None  # CUDA only: max allocated during the timed steps
    data_wait: float | None = None  # shards feed: fraction of the wall time spent waiting for batches
    ratio_reference: float | None = None  # img/s over the reference's, same model and mode, memory feed
    ratio_memory: float | None = None  # shards feed: img/s over the same case's memory feed
    error: str | None = None

    @property
    def case(self) -> str:
        return f"{self.model} {self.variant} {self.mode} {self.feed}"


def add_ratios(rows: Sequence[Row]) -> None:
    """Fill `ratio_reference` and `ratio_memory` of rows measured with one BenchConfig (or merged runs of one)."""
    timed = {(r.model, r.variant, r.mode, r.feed): r.img_per_s for r in rows if r.img_per_s}
    for r in rows:
        if not r.img_per_s:
            continue
        reference = timed.get((r.model, "reference", r.mode.removesuffix("+ckpt"), "memory"))
        r.ratio_reference = r.img_per_s / reference if reference else None
        memory = timed.get((r.model, r.variant, r.mode, "memory")) if r.feed == "shards" else None
        r.ratio_memory = r.img_per_s / memory if memory else None


@dataclass
class Results:
    """One run, as `demakeup bench --json` writes it."""

    date: str
    command: str
    machine: dict[str, Any]  # machine.machine_info
    config: dict[str, Any]  # the BenchConfig
    variants: dict[str, str]  # name -> summary of the variants run
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] | None = None  # data/bench_data.py's rates (bench data / all)
    gate_all_ready: bool | None = None  # with a gate: whether every process was ready before the timing

    @classmethod
    def start(cls, config: BenchConfig, variants: Sequence[str], command: str) -> Results:
        return cls(datetime.now(timezone.utc).isoformat(timespec="seconds"), command, machine_info(config.device),
                   asdict(config), {name: VARIANTS[name].summary for name in variants})

    @classmethod
    def load(cls, path: Path) -> Results:
        """A file `save` wrote; ValueError naming the file when it is not one."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**{**data, "rows": [Row(**row) for row in data["rows"]]})
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: not a `demakeup bench --json` file ({type(exc).__name__}: {exc})") from None

    def save(self, path: Path | None) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(path, asdict(self))

    def text(self) -> str:
        """What the command prints at the end: the setup, the table, the data engine's rates."""
        c, machine = self.config, self.machine
        setup = (f"{c['device']}: {machine['gpu'] or machine['cpu']}, batch {c['batch']}, {c['size']} px, "
                 f"{c['precision']}, {c['steps']} timed steps after {c['warmup']}")
        lines = [setup, format_table(self.rows)]
        if self.data is not None:
            lines.append(data_line(self.data, c["batch"]))
        return "\n".join(lines)


def progress_line(row: Row) -> str:
    """A row as soon as it is timed."""
    if row.error:
        return f"{row.case}: FAILED {row.error}"
    extra = f", peak {row.peak_mem_gb:.2f} GB" if row.peak_mem_gb is not None else ""
    extra += f", data-wait {row.data_wait:.1%}" if row.data_wait is not None else ""
    return f"{row.case}: {row.img_per_s:.1f} img/s{extra}"


def format_table(rows: Sequence[Row]) -> str:
    """Rows as an aligned table; "-": not applicable or not measured. Failed cases follow, with why."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = ["model", "variant", "mode", "feed", "img/s", "step ms", "peak GB", "data-wait", "x ref", "x memory"]
    body = [[r.model, r.variant, r.mode, r.feed, num(r.img_per_s, ".1f"), num(r.step_ms, ".1f"),
             num(r.peak_mem_gb, ".2f"), num(r.data_wait, ".1%"), num(r.ratio_reference, ".2f"),
             num(r.ratio_memory, ".2f")] for r in rows]
    return "\n".join([table(header, body), *(f"{r.case}: FAILED {r.error}" for r in rows if r.error)])


def data_line(data: dict[str, Any], batch: int) -> str:
    """data/bench_data.py's rates in one sentence."""
    if "error" in data:
        return f"loader benchmark failed: {data['error']}"
    rates = data["read_samples_per_s_per_worker"]
    with_hr = f", {rates['with_hr']:.0f} with HR" if "with_hr" in rates else ""
    read = data["bytes_read_per_rank_per_epoch"]
    line = (f"streaming reader (read + decode + batch of {batch}, 1 worker, {data['bytes_per_triplet'] / 1024:.0f} "
            f"KiB per triplet): {rates['without_hr']:.0f} samples/s without HR{with_hr}; bytes read per rank "
            f"per epoch with {read['world_size']} ranks: {read['max_over_share']:.2f}x its share at most")
    decode = data.get("hr_decode")
    if decode:
        gpu = f"nvJPEG {decode['nvjpeg_per_s']:.0f}/s (batches of {decode['nvjpeg_batch']}, largest pixel " \
              f"difference {decode['nvjpeg_max_abs_diff']})" if "nvjpeg_per_s" in decode else \
              f"no nvJPEG ({decode['nvjpeg_missing']})"
        line += (f"\nHR JPEG decode ({decode['jpeg_kib_mean']:.0f} KiB mean): {decode['cpu_per_s']:.0f}/s on one "
                 f"CPU core, {gpu}")
    return line


@dataclass
class Merged:
    """The results files of runs made side by side (scripts/gpu_bench.sh), as one table.

    Ratios are recomputed across the runs: a row's reference may have been timed by another process.
    """

    runs: dict[str, Results]  # file stem -> its run
    unreadable: dict[str, str]  # file stem -> why it could not be read
    rows: list[Row]

    @classmethod
    def read(cls, folder: Path) -> Merged:
        """Every *.json file of `folder`; FileNotFoundError when there is none."""
        files = sorted(Path(folder).glob("*.json"))
        if not files:
            raise FileNotFoundError(f"no bench results (*.json) in {folder}: write them with `demakeup bench --json`")
        runs, unreadable = {}, {}
        for path in files:
            try:
                runs[path.stem] = Results.load(path)
            except (OSError, ValueError) as exc:
                unreadable[path.stem] = str(exc)
        rows = [row for run in runs.values() for row in run.rows]
        add_ratios(rows)
        # Per model: eager before compiled, without checkpointing first, memory feed first, the reference first.
        rows.sort(key=lambda r: (r.model, not r.mode.startswith("eager"), "+ckpt" in r.mode, r.feed,
                                 r.variant != "reference"))
        return cls(runs, unreadable, rows)

    def text(self) -> str:
        first = next(iter(self.runs.values()), None)
        lines = [f"machine: {json.dumps(first.machine if first else None)}",
                 f"config: {json.dumps(first.config if first else None)}", "", format_table(self.rows), ""]
        lines += [f"{name}: {data_line(run.data, run.config['batch'])}" for name, run in self.runs.items()
                  if run.data is not None]
        lines.append("gate (every process ready before timing): "
                     + json.dumps({name: run.gate_all_ready for name, run in self.runs.items()}))
        lines += [f"unreadable: {name}: {why}" for name, why in self.unreadable.items()]
        return "\n".join(lines)

    def save(self, path: Path | None) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(path, {"rows": [asdict(r) for r in self.rows],
                                     "runs": {name: asdict(run) for name, run in self.runs.items()},
                                     "unreadable": self.unreadable})
