"""Check a shard set against its manifest: every byte (sha256), every sample, every image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import webdataset as wds

from demakeup_dist.data.codec import decode_rgb
from demakeup_dist.data.pool import parallel_map
from demakeup_dist.data.scan import ROLES
from demakeup_dist.data.shards import MANIFEST, REPORT_LINES, file_sha256, load_manifest


def verify_shards(shards_dir: Path, *, workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Re-read every shard of `shards_dir`; a summary, or ValueError naming each bad shard and why.

    Checks: each listed shard exists with the manifest's size and sha256, holds the listed number of
    samples with the expected keys and members, every image decodes to RGB at the manifest's size
    (S x S, HR 4S x 4S), and no unlisted .tar lies in the folder.
    """
    shards_dir = Path(shards_dir)
    manifest = load_manifest(shards_dir)
    size = manifest["image_size"]
    jobs, listed, problems = [], set(), []
    for split, info in manifest["splits"].items():
        first = 0
        for entry in info["shards"]:
            jobs.append((shards_dir / entry["name"], entry, first, info["has_hr"], size))
            listed.add(entry["name"])
            first += entry["samples"]
        if first != info["samples"]:
            problems.append(f"{MANIFEST}: {split} lists {first} samples in shards but says {info['samples']}")
    problems += [f"{p.name}: not listed in {MANIFEST} (left from another run? delete it)"
                 for p in sorted(shards_dir.glob("*.tar")) if p.name not in listed]
    results = parallel_map(_verify_shard, jobs, workers=workers, desc="verify", progress=progress,
                           weights=[job[1]["samples"] for job in jobs], unit="sample")
    problems += [p for shard_problems in results for p in shard_problems]
    if problems:
        lines = problems[:REPORT_LINES] + ([f"... and {len(problems) - REPORT_LINES} more"]
                                           if len(problems) > REPORT_LINES else [])
        raise ValueError(f"shard set {shards_dir} failed verification ({len(problems)} problem(s)):\n  "
                         + "\n  ".join(lines) + "\nRe-create it with `demakeup shard SRC --overwrite`.")
    return {"samples": {split: info["samples"] for split, info in manifest["splits"].items()},
            "shards": len(jobs), "bytes": sum(job[1]["bytes"] for job in jobs)}


def _verify_shard(job: tuple[Path, dict, int, bool, int]) -> list[str]:
    """Problems of one shard (runs in a worker process), each prefixed with the shard's name."""
    path, entry, first, has_hr, size = job
    name = entry["name"]
    if not path.is_file():
        return [f"{name}: missing"]
    problems = []
    if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
        problems.append(f"{name}: sha256 differs from {MANIFEST}: the file changed or was corrupted after packing")
    count = 0
    try:
        for count, sample in enumerate(wds.tarfile_samples([{"url": str(path)}]), start=1):
            problems += [f"{name}: {p}" for p in _sample_problems(sample, f"{first + count - 1:06d}", has_hr, size)]
    except Exception as exc:  # a damaged tar header can raise from tarfile, gzip probing or webdataset
        problems.append(f"{name}: unreadable tar after {count} samples ({type(exc).__name__}: {exc})")
    if count != entry["samples"]:
        problems.append(f"{name}: holds {count} samples, {MANIFEST} says {entry['samples']}")
    return problems


def _sample_problems(sample: dict, key: str, has_hr: bool, size: int) -> list[str]:
    where = f"sample {sample['__key__']}"
    problems = [] if sample["__key__"] == key else [f"{where}: expected key {key} (samples out of order?)"]
    members = {k for k in sample if not k.startswith("__")}
    try:
        sample["name.txt"].decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        problems.append(f"{where}: no UTF-8 name.txt")
    expected = {"name.txt"}
    for role in ROLES[:3 if has_hr else 2]:
        found = [k for k in members if k in (f"{role}.jpg", f"{role}.png")]
        if len(found) != 1:
            problems.append(f"{where}: expected one {role}.jpg or {role}.png, found {found or 'none'}")
            continue
        expected.add(found[0])
        want = 4 * size if role == "hr" else size
        try:
            shape = decode_rgb(sample[found[0]], found[0].split(".")[1]).shape
        except Exception as exc:  # any decoder failure means the same thing: a damaged image
            problems.append(f"{where}: {found[0]} undecodable ({type(exc).__name__}: {exc})")
            continue
        if shape != (want, want, 3):
            problems.append(f"{where}: {found[0]} is {shape[1]}x{shape[0]}, expected {want}x{want}")
    problems += [f"{where}: unexpected member {k}" for k in sorted(members - expected)]
    return problems
