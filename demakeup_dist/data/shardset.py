"""A shard set opened once: its manifest, its splits, its identity, and where every image lies in the tars.

`ShardSet.open(folder)` reads `manifest.json` once; the training loop, the reader and the resident
cache all take the object, so nothing re-parses the manifest per epoch. `identity` is
`shards.shard_set_id`: a checksum of the content (image size, every shard's sha256), the same for a
re-sharding of the same data, different for any other content.

`member_index(split)` scans the tar headers of a split once (512-byte reads, no image bytes) and
records each member's byte range, so a reader can fetch exactly the samples it needs with `pread`
instead of streaming whole shards (see data/loader.py).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from demakeup_dist.choices import SPLITS
from demakeup_dist.data.scan import ROLES
from demakeup_dist.data.shards import MANIFEST, file_sha256, load_manifest, shard_set_id

MEMBERS = (*ROLES, "name")  # columns of a MemberIndex; "name" is the name.txt member


@dataclass(frozen=True)
class Split:
    """One split of a shard set. `starts[k]`: index of shard k's first sample; `starts[-1]`: samples."""

    name: str
    paths: tuple[Path, ...]
    entries: tuple[dict, ...]  # the manifest's shard entries (name, samples, bytes, sha256)
    starts: np.ndarray
    has_hr: bool

    @property
    def samples(self) -> int:
        return int(self.starts[-1])


@dataclass(frozen=True)
class MemberIndex:
    """Byte ranges of every sample's members: `offsets[i, m]`, `sizes[i, m]` for MEMBERS[m] (-1: absent);
    `png[i, r]`: image role r is stored as PNG (else JPEG); `shard[i]`: which shard holds sample i."""

    offsets: np.ndarray
    sizes: np.ndarray
    png: np.ndarray
    shard: np.ndarray


class ShardSet:
    """A complete shard set (see data/shards.py for the format); `ShardSet.open` also accepts one."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.identity = shard_set_id(self.manifest)
        self.image_size: int = self.manifest["image_size"]
        self.hr_size: int | None = self.manifest["hr_size"]
        self._indexes: dict[str, MemberIndex] = {}

    @classmethod
    def open(cls, shards: Path | str | ShardSet) -> ShardSet:
        return shards if isinstance(shards, ShardSet) else cls(Path(shards))

    def __repr__(self) -> str:
        return f"ShardSet({str(self.root)!r})"

    @property
    def has_hr(self) -> bool:
        return bool(self.manifest["has_hr"])

    def split(self, name: str, with_hr: bool = False) -> Split:
        """The split `name`; ValueError if it is absent, or lacks HR images when `with_hr`."""
        splits = self.manifest["splits"]
        if name not in splits:
            raise ValueError(f"no split {name!r} in {self.root}; it has {', '.join(splits)}")
        info = splits[name]
        if with_hr and not info["has_hr"]:
            raise ValueError(f"the {name} shards in {self.root} hold no HR images (the source had no high_r/ or "
                             "hr_image/ folder there): super-resolution (p4) needs them")
        counts = [shard["samples"] for shard in info["shards"]]
        return Split(name, tuple(self.root / s["name"] for s in info["shards"]), tuple(info["shards"]),
                     np.cumsum([0, *counts]), bool(info["has_hr"]))

    def check_trainable(self, with_hr: bool) -> None:
        """Refuse up front what would only fail after training: a missing or empty val / test split."""
        for name in SPLITS:
            if self.split(name, with_hr).samples == 0:
                raise ValueError(f"the {name} split of {self.root} is empty (all its files were skipped by "
                                 "`demakeup shard --skip-bad`?): training needs train, val and test samples; "
                                 "see 'skipped' in its manifest.json")

    def verify_checksums(self, names: list[str], rank: int = 0, world: int = 1,
                         agree: Callable[[bool], bool] = bool) -> None:
        """Check the shards of `names` against the manifest's sha256, rank r taking shards r, r+W, ...

        `agree(bad_here)` must return whether any rank found a bad shard (a collective); every rank then
        raises, the finder naming the shard, so no rank trains on data `demakeup verify` would reject.
        """
        entries = [pair for split in map(self.split, names) for pair in zip(split.paths, split.entries)]
        bad = None
        for path, entry in entries[rank::world]:
            if not path.is_file():
                bad = f"{path} is missing"
            elif path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
                bad = f"{path} differs from its sha256 in {self.root / MANIFEST} (changed or corrupted)"
            if bad:
                break
        if agree(bad is not None):
            raise ValueError(f"{bad or 'another process found a damaged shard'}: run `demakeup verify {self.root}` "
                             "and re-create the set with `demakeup shard SRC --overwrite`")

    def member_index(self, split: str) -> MemberIndex:
        """Where each member of each sample of `split` lies (scanned once per process, then cached)."""
        if split not in self._indexes:
            self._indexes[split] = _scan(self.split(split))
        return self._indexes[split]


def _scan(split: Split) -> MemberIndex:
    n = split.samples
    offsets = np.full((n, len(MEMBERS)), -1, dtype=np.int64)
    sizes = np.full((n, len(MEMBERS)), -1, dtype=np.int64)
    png = np.zeros((n, len(ROLES)), dtype=bool)
    shard = np.zeros(n, dtype=np.int64)
    column = {m: i for i, m in enumerate(MEMBERS)}
    for k, path in enumerate(split.paths):
        shard[split.starts[k]:split.starts[k + 1]] = k
        # buffering=0: tarfile then reads each 512-byte header and seeks over the data, so building
        # the index reads about 2 KiB per sample, not the images.
        try:
            with open(path, "rb", buffering=0) as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
                for member in tar:
                    key, _, rest = member.name.partition(".")
                    role, _, ext = rest.partition(".")
                    index = int(key) if key.isdigit() else -1
                    if not split.starts[k] <= index < split.starts[k + 1] or role not in column:
                        raise ValueError(f"unexpected member {member.name!r}")
                    offsets[index, column[role]] = member.offset_data
                    sizes[index, column[role]] = member.size
                    if role in ROLES:
                        png[index, column[role]] = ext == "png"
        except (OSError, tarfile.TarError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable shard ({exc}): run `demakeup verify {path.parent}`") from None
    wanted = [column[m] for m in MEMBERS if m != "hr" or split.has_hr]
    missing = np.argwhere(offsets[:, wanted] < 0)
    if len(missing):
        index, m = missing[0]
        raise ValueError(f"sample {index:06d} of {split.name} has no {MEMBERS[wanted[m]]} member in "
                         f"{split.paths[shard[index]]}: run `demakeup verify {split.paths[0].parent}`")
    return MemberIndex(offsets, sizes, png, shard)
