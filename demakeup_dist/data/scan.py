"""Find, pair and validate the makeup / non-makeup / HR triplets of a dataset in the course layout.

Layout: ``SRC/{train,val,test}/{makeup,non-makeup,high_r}/NAME`` (``hr_image`` is accepted for
``high_r``; the HR folder is optional per split). A triplet is one exact file NAME present in every
folder of its split. Images may be .jpg/.jpeg/.png with any UTF-8 name not starting with '.' (hidden
image files are recorded as skipped); they must decode, read as RGB (`codec.to_rgb`), be square,
makeup and non-makeup of one size S (the most common size unless pinned), HR 4S x 4S.

`check_dataset` never raises for a bad file: it returns every problem, so the caller can refuse
with one complete report or skip the bad triplets. It raises only when the layout itself is wrong.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from demakeup_dist.choices import SPLITS
from demakeup_dist.data.codec import STORED_FORMATS, UnsupportedImage, is_plain_rgb, to_rgb
from demakeup_dist.data.pool import parallel_map

HR_FOLDERS = ("high_r", "hr_image")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Role of an image in a triplet -> its folder (the HR folder name is found per split).
FOLDERS = {"makeup": "makeup", "non_makeup": "non-makeup"}
ROLES = ("makeup", "non_makeup", "hr")  # also the member names in the shards and the batch keys


@dataclass(frozen=True)
class Problem:
    """One file left out of the shards and why. `file` is relative to the dataset root, with '/'."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class ImageInfo:
    """What packing needs to know about one valid image."""

    size: tuple[int, int]  # (width, height)
    ext: str  # tar extension it is stored under: "jpg" or "png"
    convert: bool  # True: store a lossless PNG of its RGB conversion instead of the original bytes


@dataclass(frozen=True)
class Triplet:
    """One sample: the same file name in each folder of a split. `files` maps role -> path."""

    name: str
    files: dict[str, Path]


@dataclass
class CheckedSplit:
    """The valid triplets of one split (sorted by name) and everything left out."""

    split: str
    hr_folder: str | None
    triplets: list[tuple[Triplet, dict[str, ImageInfo]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # what is wrong: the refusal report
    skipped: list[Problem] = field(default_factory=list)  # every file left out: problems + partners
    hidden: list[Problem] = field(default_factory=list)  # hidden image files: left out, not an error


@dataclass
class CheckedDataset:
    """The outcome of `check_dataset`: the input size and each split's triplets and problems."""

    root: Path
    size: int  # S: inputs are S x S, HR targets 4S x 4S
    splits: list[CheckedSplit]

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.splits for p in s.problems]


def check_dataset(src: Path, *, size: int | None = None, workers: int | None = None,
                  progress: bool = True) -> CheckedDataset:
    """Pair and validate every image under `src` (see module doc); decoding runs on `workers` cores."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"dataset folder {src} does not exist (expected {src}/train/makeup/...)")
    if not any((src / s).is_dir() for s in SPLITS):
        raise ValueError(f"{src} has no train/, val/ or test/ folder: is it the dataset root "
                         "(demake_up_data/ with train/makeup/, train/non-makeup/, train/high_r/)?")
    if size is not None and size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {size}")
    splits = [_pair_split(src, name) for name in SPLITS]
    jobs = [t for _, triplets in splits for t in triplets]
    checks = parallel_map(_check_triplet, jobs, workers=workers, desc="validate", progress=progress,
                          unit="triplet")
    pinned = size is not None
    if size is None:
        size = _common_size(src, [infos["makeup"].size for infos, _ in checks if infos])
    results = iter(checks)
    for split, triplets in splits:
        for triplet in triplets:
            infos, problems = next(results)
            problems = problems or _size_problems(triplet, infos, size, pinned)
            if problems:
                split.problems += problems
                bad = sorted(p.file for p in problems)
                split.skipped += problems + [Problem(_short(path), f"skipped with its bad partner {bad[0]}")
                                             for path in triplet.files.values() if _short(path) not in bad]
            else:
                split.triplets.append((triplet, infos))
        if not split.triplets and not split.problems:
            split.problems.append(Problem(f"{split.split}/", (
                f"empty split: no image triplets (expected {split.split}/makeup/ and "
                f"{split.split}/non-makeup/ holding the same file names)")))
            split.skipped.append(split.problems[-1])
    return CheckedDataset(src, size, [s for s, _ in splits])


def _short(path: Path) -> str:
    """SPLIT/FOLDER/NAME: a file's path relative to the dataset root."""
    return "/".join(path.parts[-3:])


def _common_size(src: Path, sizes: list[tuple[int, int]]) -> int:
    """The most common input size (ties: the first seen); 0 if nothing decoded (all reported anyway)."""
    if not sizes:
        return 0
    (width, height), _ = Counter(sizes).most_common(1)[0]
    if width != height:
        raise ValueError(f"most images in {src} are {width}x{height}; the models need square images")
    return width


def _pair_split(src: Path, split: str) -> tuple[CheckedSplit, list[Triplet]]:
    """Folders of one split -> (its CheckedSplit with pairing problems, triplets to validate)."""
    base = src / split
    hr_found = [name for name in HR_FOLDERS if (base / name).is_dir()]
    if len(hr_found) > 1:
        raise ValueError(f"{base} has both high_r/ and hr_image/: keep one HR folder per split")
    checked = CheckedSplit(split, hr_found[0] if hr_found else None)
    folders = dict(FOLDERS, **({"hr": checked.hr_folder} if checked.hr_folder else {}))
    listed: dict[str, set[str]] = {}
    for role, folder in folders.items():
        listed[role] = set()
        if not (base / folder).is_dir():
            continue  # every file of the other folders is then reported as missing this partner
        for path in sorted((base / folder).iterdir()):
            image_name = path.suffix.lower() in IMAGE_SUFFIXES
            if path.name.startswith("."):  # .DS_Store, editor swap files: not part of the data
                if image_name:  # but a hidden photo is recorded, so that it does not vanish unnoticed
                    checked.hidden.append(Problem(_short(path), "hidden file (the name starts with '.'): "
                                                                "left out; rename it to include it"))
                continue
            if not _is_utf8(path.name):  # the manifest and the shards store names as UTF-8
                checked.problems.append(Problem(_printable(_short(path)), "the file name is not valid UTF-8 "
                                                                          "(shown with \\x escapes): rename it"))
            elif path.is_symlink() and not path.exists():
                checked.problems.append(Problem(_short(path), f"broken symbolic link (to {os.readlink(path)})"))
            elif path.is_file() and image_name:
                listed[role].add(path.name)
            else:
                kind = "a folder" if path.is_dir() else f"extension '{path.suffix}'"
                checked.problems.append(Problem(_short(path), f"not an image ({kind}; expected "
                                                                 ".jpg, .jpeg or .png)"))
    triplets = []
    for name in sorted(set().union(*listed.values())):
        missing = [folders[role] for role in folders if name not in listed[role]]
        files = {role: base / folders[role] / name for role in folders if name in listed[role]}
        if missing:
            reason = "missing partner: no " + " and no ".join(f"{split}/{f}/{name}" for f in missing)
            checked.problems += [Problem(_short(path), reason) for path in files.values()]
        else:
            triplets.append(Triplet(name, files))
    checked.skipped = checked.problems + checked.hidden
    return checked, triplets


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # undecodable bytes of a file name arrive as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _check_triplet(triplet: Triplet) -> tuple[dict[str, ImageInfo], list[Problem]]:
    """Decode the three images; ({} and the problems) if any is bad. Runs in a worker process."""
    infos, problems = {}, []
    for role, path in triplet.files.items():
        try:
            infos[role] = inspect_image(path)
        except ValueError as exc:
            problems.append(Problem(_short(path), str(exc)))
    return ({} if problems else infos), problems


def inspect_image(path: Path) -> ImageInfo:
    """Decode `path` fully and say how it will be stored; ValueError("not an image"/"undecodable")."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror or exc})") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structural checks (PNG CRCs) that a plain decode skips
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            stored = image.format in STORED_FORMATS and is_plain_rgb(image)
            fmt, size = image.format, to_rgb(image).size
    except UnidentifiedImageError:
        raise ValueError("not an image (Pillow cannot identify the file's format)") from None
    except UnsupportedImage as exc:
        raise ValueError(f"unsupported: {exc}") from None
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, struct.error...)
        raise ValueError(f"undecodable ({type(exc).__name__}: {exc})") from None
    return ImageInfo(size, STORED_FORMATS[fmt] if stored else "png", convert=not stored)


def _size_problems(triplet: Triplet, infos: dict[str, ImageInfo], size: int, pinned: bool) -> list[Problem]:
    why = "" if pinned else " (the most common size in the dataset; pin another with --size)"
    expected = {"makeup": size, "non_makeup": size, "hr": 4 * size}
    problems = []
    for role, info in infos.items():
        want = expected[role]
        if info.size != (want, want):
            note = " (4x the input)" if role == "hr" else why
            problems.append(Problem(_short(triplet.files[role]),
                                    f"wrong size: {info.size[0]}x{info.size[1]}, expected {want}x{want}{note}"))
    return problems
