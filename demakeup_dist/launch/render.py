"""Job options -> a Slurm batch script: validation, node/process layout and template filling.

The template (default: the shipped `slurm/train.sbatch`, see demakeup_dist.resources) holds `{{name}}` placeholders. Each is replaced by a quoted
value, so that nothing in a path or option is ever executed or split:
  * in `#SBATCH` lines, with sbatch's own directive quoting (double quotes, `\\` escapes); a directive
    whose value is not set (None) is left out;
  * everywhere else, with POSIX shell quoting (`shlex.quote`); a list becomes several quoted words.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from demakeup_dist.choices import MIXED_PRECISION, PRECISIONS, STRATEGIES, check_choice
from demakeup_dist.models import MODEL_NAMES
from demakeup_dist.rundir import RunDir
from demakeup_dist.resources import deepspeed_config, sbatch_template

# Options the launcher itself sets for `demakeup train`; the error says which submit option to use.
RESERVED_TRAIN_OPTIONS = {
    "--shards": "--shards", "--run-dir": "--run-dir", "--resume": "--resume", "--nproc": "--gpus",
    "--strategy": "--strategy", "--zero": "--zero", "--precision": "--precision", "--config": "--config",
}
_TIME = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_NAME = re.compile(r"^[A-Za-z0-9_.,+-]+$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,:@=/+%-]+$")


@dataclass(frozen=True)
class JobOptions:
    """What `demakeup submit` asks for. Paths should be absolute: the job may start in another folder."""

    model: str
    shards: Path
    run_dir: Path
    gpus: int = 1
    gpus_per_node: int = 8
    nodes: int | None = None  # None: as many as the GPUs need (1 for CPU jobs)
    cpu_procs_per_node: int = 1  # training processes per node when gpus == 0
    cpus_per_gpu: int = 8  # CPU cores per training process (per GPU, or per CPU process)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # Slurm time limit, e.g. 1-00:00:00 or 12:00:00
    mem: str | None = None  # per node, e.g. 200G
    strategy: str = "ddp"
    zero: int = 2
    precision: str | None = None  # None or auto: bf16 on GPUs, fp32 on CPUs
    config: Path | None = None
    signal_seconds: int = 120
    max_restarts: int = 10
    train_args: tuple[str, ...] = ()
    job_name: str | None = None
    python: str = sys.executable


@dataclass(frozen=True)
class Layout:
    """Where the training processes go: `nodes` x `procs_per_node`, one Slurm task per node."""

    nodes: int
    procs_per_node: int
    gpus_per_node: int  # 0 for a CPU job

    @property
    def processes(self) -> int:
        return self.nodes * self.procs_per_node


def plan_layout(gpus: int, gpus_per_node: int, nodes: int | None, cpu_procs_per_node: int = 1) -> Layout:
    """Nodes = ceil(gpus / gpus_per_node), or `gpus` spread evenly over an explicit `nodes`."""
    _positive(gpus_per_node, "--gpus-per-node")
    if nodes is not None:
        _positive(nodes, "--nodes")
    if gpus < 0:
        raise ValueError(f"--gpus {gpus}: must be 0 (CPU processes) or more")
    if gpus == 0:
        _positive(cpu_procs_per_node, "--cpu-procs-per-node")
        return Layout(nodes or 1, cpu_procs_per_node, 0)
    if nodes is None:
        nodes = math.ceil(gpus / gpus_per_node)
        if nodes > 1 and gpus % gpus_per_node:
            lower, upper = (gpus // gpus_per_node) * gpus_per_node, nodes * gpus_per_node
            even = f", or spread them evenly with --nodes {nodes}" if gpus % nodes == 0 else ""
            raise ValueError(
                f"--gpus {gpus} does not fill whole nodes of {gpus_per_node} GPUs (--gpus-per-node): "
                f"use --gpus {lower} or {upper}{even}"
            )
    if gpus % nodes:
        raise ValueError(f"--gpus {gpus} cannot be spread evenly over --nodes {nodes}: use a multiple of {nodes}")
    per_node = gpus // nodes
    if per_node > gpus_per_node:
        raise ValueError(
            f"--gpus {gpus} on --nodes {nodes} needs {per_node} GPUs per node, more than --gpus-per-node "
            f"{gpus_per_node}: use --nodes {math.ceil(gpus / gpus_per_node)} or more"
        )
    return Layout(nodes, per_node, per_node)


def time_limit_seconds(text: str) -> int:
    """Seconds in a Slurm time limit (`M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`)."""
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"--time {text!r}: not a Slurm time limit; use D-HH:MM:SS (e.g. 1-00:00:00) or HH:MM:SS")
    d, dh, dm, ds, m, ms, hs = (int(g) if g else 0 for g in match.groups())
    if match.group(1) is not None:
        return ((d * 24 + dh) * 60 + dm) * 60 + ds
    if match.group(7) is not None:  # H:M:S
        return (m * 60 + ms) * 60 + hs
    return m * 60 + ms  # M or M:S


def validate(opts: JobOptions) -> Layout:
    """Check every option (raising ValueError naming it) and return the process layout."""
    check_choice("model", opts.model, MODEL_NAMES)
    layout = plan_layout(opts.gpus, opts.gpus_per_node, opts.nodes, opts.cpu_procs_per_node)
    _positive(opts.cpus_per_gpu, "--cpus-per-gpu")
    _positive(opts.signal_seconds, "--signal-seconds")
    if opts.max_restarts < 0:
        raise ValueError(f"--max-restarts {opts.max_restarts}: must be 0 or more")
    check_choice("--strategy", opts.strategy, STRATEGIES)
    if opts.strategy == "deepspeed":
        if opts.gpus == 0:
            raise ValueError("--strategy deepspeed needs GPUs: use --gpus N, or --strategy ddp for CPU jobs")
        deepspeed_config(opts.zero)
    if opts.precision is not None:
        check_choice("--precision", opts.precision, PRECISIONS)
    if opts.gpus == 0 and opts.precision == "fp16":
        raise ValueError("--precision fp16 needs GPUs: use fp32 or bf16 for CPU jobs")
    if opts.time is not None and time_limit_seconds(opts.time) <= opts.signal_seconds:
        raise ValueError(f"--time {opts.time} must be longer than --signal-seconds {opts.signal_seconds}")
    if opts.mem is not None and not _MEM.match(opts.mem):
        raise ValueError(f"--mem {opts.mem!r}: use a number with an optional K/M/G/T suffix, e.g. 200G")
    for flag, value in (("--partition", opts.partition), ("--account", opts.account), ("--qos", opts.qos),
                        ("--job-name", opts.job_name)):
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{flag} {value!r}: only letters, digits and _ . , + - are allowed")
    for flag, path in (("--shards", opts.shards), ("--run-dir", opts.run_dir), ("--config", opts.config)):
        if path is not None and "\n" in str(path):
            raise ValueError(f"{flag}: a path with a line break cannot be passed to sbatch; rename it")
    if "\\" in str(opts.run_dir):
        # The log path (#SBATCH --output) is a Slurm filename pattern, where a backslash switches off
        # the %j expansion: the job would start without its log, and nothing would say why.
        raise ValueError(f"--run-dir {opts.run_dir}: Slurm reads a backslash in the log path as an escape; "
                         "choose a run dir path without '\\'")
    for arg in opts.train_args:
        option = arg.split("=", 1)[0]
        if option in RESERVED_TRAIN_OPTIONS:
            raise ValueError(f"extra train option {option}: set by the launcher; use submit's "
                             f"{RESERVED_TRAIN_OPTIONS[option]} instead")
    return layout


def template_values(opts: JobOptions, layout: Layout) -> dict[str, object]:
    """The placeholder values for `opts` (None: leave that #SBATCH line out)."""
    cpu = opts.gpus == 0
    precision = opts.precision if opts.precision not in (None, "auto") else ("fp32" if cpu else "bf16")
    if opts.strategy == "deepspeed":
        launch_flags = ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_config(opts.zero))]
    elif layout.processes > 1:
        launch_flags = ["--multi_gpu"]  # torch elastic; with ACCELERATE_USE_CPU=1 it runs gloo CPU workers
    else:
        launch_flags = ["--cpu"] if cpu else []
    train_args = ["--strategy", opts.strategy] + (["--zero", str(opts.zero)] if opts.strategy == "deepspeed" else [])
    train_args += ["--config", str(opts.config)] if opts.config else []
    return {
        "job_name": opts.job_name or f"demakeup-{opts.model}",
        "nodes": layout.nodes,
        "gpus_per_node": layout.gpus_per_node or None,
        "cpus_per_task": opts.cpus_per_gpu * layout.procs_per_node,
        "mem": opts.mem, "time": opts.time, "partition": opts.partition, "account": opts.account, "qos": opts.qos,
        "log": log_pattern(opts.run_dir),
        "signal_seconds": opts.signal_seconds,
        "run_dir": str(opts.run_dir),
        "stop_file": str(RunDir(opts.run_dir).stop_file),
        "status_file": str(RunDir(opts.run_dir).status_file),
        "python": opts.python,
        "max_restarts": opts.max_restarts,
        "use_cpu": "true" if cpu else "false",
        "threads_per_process": opts.cpus_per_gpu,
        "processes": layout.processes,
        "launch_flags": launch_flags,
        "mixed_precision": MIXED_PRECISION[precision],
        "model": opts.model,
        "shards": str(opts.shards),
        "precision": precision,
        "train_args": train_args + list(opts.train_args),
    }


def log_pattern(run_dir: Path) -> str:
    """sbatch's --output for a run dir: `%` in the path doubled so that only `%j` (the job id) expands."""
    return str(RunDir(str(run_dir).replace("%", "%%")).slurm_log("%j"))


def render(opts: JobOptions, template: Path | None = None) -> str:
    """The batch script for `opts` from `template` (default: the shipped `slurm/train.sbatch`)."""
    layout = validate(opts)
    path = template or sbatch_template()
    if not Path(path).is_file():
        raise FileNotFoundError(f"--template {path}: no such file (start from a copy of {sbatch_template()})")
    return fill_template(Path(path).read_text(encoding="utf-8"), template_values(opts, layout), str(path))


def fill_template(text: str, values: dict[str, object], source: str = "template") -> str:
    """Replace every `{{name}}` with its quoted value (see the module docstring)."""
    lines = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        names = _PLACEHOLDER.findall(line)
        unknown = [n for n in names if n not in values]
        if unknown:
            raise ValueError(f"{source} line {number}: unknown placeholder {{{{{unknown[0]}}}}}; "
                             f"known: {', '.join(sorted(values))}")
        directive = line.lstrip().startswith("#SBATCH")
        if directive and any(values[n] is None for n in names):
            continue
        if not directive and any(values[n] is None for n in names):
            raise ValueError(f"{source} line {number}: a value for {{{{{names[0]}}}}} is needed outside #SBATCH lines")
        quote = sbatch_quote if directive else _shell_words
        lines.append(_PLACEHOLDER.sub(lambda m: quote(values[m.group(1)]), line))
    return "".join(lines)


def sbatch_quote(value: object) -> str:
    """Quote a value for an #SBATCH line (sbatch splits at blanks, ends at `#`, honours "..." and \\)."""
    text = str(value)
    if _SAFE_WORD.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shell_words(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(str(v)) for v in value)
    return shlex.quote(str(value))


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise ValueError(f"{flag} {value}: must be 1 or more")
