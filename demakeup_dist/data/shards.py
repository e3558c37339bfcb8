"""Pack a validated dataset into webdataset tar shards with a manifest; verify a shard set; read its manifest.

A shard set is a folder ``OUT/`` holding ``{split}-{index:06d}.tar`` and ``manifest.json``. Sample i of
a split (0-based, in file-name order) has the key ``f"{i:06d}"`` (not the file name: webdataset splits
keys at dots) and the members ``KEY.makeup.EXT``, ``KEY.non_makeup.EXT``, ``KEY.hr.EXT`` (splits with
HR only) and ``KEY.name.txt`` (the original file name, UTF-8). EXT is ``jpg`` or ``png`` and names the
format: JPEG/PNG files whose stored pixels already are the picture (`codec.is_plain_rgb`) are stored byte
for byte, anything else as a lossless PNG of `codec.to_rgb`'s reading. Tars are written with a fixed mtime, so the same dataset gives the same bytes.

Nothing half-written looks complete: everything goes to a temporary folder beside ``OUT`` and is renamed
to ``OUT`` at the end (demakeup_dist/atomic.py); ``manifest.json`` is the mark of a complete set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import webdataset as wds

from demakeup_dist import __version__
from demakeup_dist.atomic import atomic_path, leftovers
from demakeup_dist.data.codec import encode_png, open_rgb
from demakeup_dist.data.pool import parallel_map
from demakeup_dist.data.scan import CheckedDataset, ImageInfo, Triplet, check_dataset

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "demakeup-shards"
FORMAT_VERSION = 1
REPORT_LINES = 100  # problems listed in a refusal; the rest are counted


def default_out(src: Path) -> Path:
    """Where `demakeup shard SRC` writes without --out: shards/<name of SRC>."""
    return Path("shards") / Path(src).resolve().name


def load_manifest(shards_dir: Path) -> dict[str, Any]:
    """The manifest of a complete shard set (see `write_shards` for its fields)."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {shards_dir}: run `demakeup shard SRC --out {shards_dir}` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}): re-run `demakeup shard`") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} manifest: re-run `demakeup shard`")
    return manifest


class DatasetProblems(ValueError):
    """The dataset has bad files; the message lists them. `problems` holds them all."""

    def __init__(self, src: Path, problems: list):
        self.problems = problems
        lines = [f"  {p}" for p in problems[:REPORT_LINES]]
        if len(problems) > REPORT_LINES:
            lines.append(f"  ... and {len(problems) - REPORT_LINES} more")
        super().__init__(
            f"the dataset in {src} has {len(problems)} bad file(s); nothing was written:\n" + "\n".join(lines)
            + "\nFix or remove them, or pass --skip-bad to pack only the good triplets "
            "(every skipped file is then listed in manifest.json).")


@dataclass(frozen=True)
class _ShardJob:
    path: Path
    first: int  # key of the first sample: its index in the split
    triplets: list[tuple[Triplet, dict[str, ImageInfo]]]


def write_shards(src: Path, out: Path, *, size: int | None = None, skip_bad: bool = False,
                 workers: int | None = None, samples_per_shard: int = 64, overwrite: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Validate `src` (`scan.check_dataset`) and pack it into the shard set `out`; returns the manifest.

    Bad files: DatasetProblems (nothing written) unless `skip_bad`, which leaves them out and records
    them. `out` must be new, empty, or (with `overwrite`) an existing shard set.
    """
    src, out = Path(src), Path(out)
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be at least 1, got {samples_per_shard}")
    _check_out(out, overwrite)
    dataset = check_dataset(src, size=size, workers=workers, progress=progress)
    if dataset.problems and not skip_bad:
        raise DatasetProblems(src, dataset.problems)
    if not dataset.splits[0].triplets:
        raise ValueError(f"no valid triplet left in {src}/train: nothing to train on")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.mkdir()  # not tempfile.mkdtemp: its 0700 mode would hide the shards from the other cluster users
        jobs = {s.split: [_ShardJob(tmp / f"{s.split}-{i // samples_per_shard:06d}.tar", i,
                                    s.triplets[i:i + samples_per_shard])
                          for i in range(0, len(s.triplets), samples_per_shard)] for s in dataset.splits}
        flat = [job for split_jobs in jobs.values() for job in split_jobs]
        written = iter(parallel_map(_write_shard, flat, workers=workers, desc="write", progress=progress,
                                    weights=[len(j.triplets) for j in flat], unit="triplet"))
        manifest = _manifest(dataset, {split: [next(written) for _ in js] for split, js in jobs.items()},
                             samples_per_shard)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return manifest


def _check_out(out: Path, overwrite: bool) -> None:
    for stale in leftovers(out):
        log.warning("%s is left over from an interrupted `demakeup shard`; delete it", stale)
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; choose a folder")
    if (out / MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a shard set; pass --overwrite to replace it "
                                  "or choose another --out")
    elif any(out.iterdir()):
        # Never delete a folder we did not write, even with --overwrite: it may be the user's data.
        raise FileExistsError(f"{out} exists, is not empty and is not a shard set; choose a new --out")


def _write_shard(job: _ShardJob) -> dict[str, Any]:
    """Write one tar (runs in a worker process); its manifest entry."""
    with open(job.path, "wb") as stream, wds.TarWriter(stream, encoder=False, mtime=0) as tar:
        for index, (triplet, infos) in enumerate(job.triplets, start=job.first):
            sample = {"__key__": f"{index:06d}", "name.txt": triplet.name.encode("utf-8")}
            for role, path in triplet.files.items():
                data = path.read_bytes()
                sample[f"{role}.{infos[role].ext}"] = encode_png(open_rgb(data)) if infos[role].convert else data
            tar.write(sample)
    return {"name": job.path.name, "samples": len(job.triplets), "bytes": job.path.stat().st_size,
            "sha256": file_sha256(job.path)}


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def shard_set_id(manifest: dict[str, Any]) -> str:
    """The identity of a shard set's content: a checksum of its image size and shard checksums. Tars are
    written reproducibly, so re-sharding the same data gives the same id, while any other content,
    size or split assignment gives another (the manifest's date and source path do not count)."""
    content = {"image_size": manifest["image_size"],
               "splits": {name: [s["sha256"] for s in split["shards"]]
                          for name, split in sorted(manifest["splits"].items())}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _manifest(dataset: CheckedDataset, shards: dict[str, list[dict]], samples_per_shard: int) -> dict[str, Any]:
    any_hr = any(s.hr_folder for s in dataset.splits)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(dataset.root.resolve()),
        "image_size": dataset.size,
        "hr_size": 4 * dataset.size if any_hr else None,
        "has_hr": all(s.hr_folder for s in dataset.splits),
        "samples_per_shard": samples_per_shard,
        "splits": {
            s.split: {
                "samples": len(s.triplets),
                "has_hr": s.hr_folder is not None,
                "hr_folder": s.hr_folder,
                "shards": shards[s.split],
                "skipped": [{"file": p.file, "reason": p.reason} for p in s.skipped],
            }
            for s in dataset.splits
        },
    }
