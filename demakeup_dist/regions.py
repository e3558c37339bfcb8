"""Where a network removed the makeup: its error per face region on a synthetic split (report only).

The synthesizer knows where it painted each product (`data/synth.py`: `REGIONS`, `region_labels`) and a
synthetic dataset records its seed and size (`synth.json`), so the region map of any of its samples is
rendered again exactly; nothing of it is stored in the shards or seen in training. Per region, summed over
every pixel of the split:

- makeup error: the squared error of the input against the target (what the identity baseline leaves);
- network error: the squared error of the network's output against the target;
- removed: ``1 - network / makeup`` in %, and ``10 log10(makeup / network)`` in dB (the region's PSNR gain).

"background" holds no makeup (its makeup error is JPEG noise only), so its row shows the error a network
adds where it should change nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from demakeup_dist.data.pool import parallel_map
from demakeup_dist.data.synth import REGIONS, read_synth_info, render_sample, sample_rng

# A re-rendered input must match the stored one this closely (JPEG q95 of the same pixels: ~45 dB), else
# the dataset is not what synth.json says (another seed, edited files) and its region maps would be wrong.
MATCH_DB = 35.0


@dataclass(frozen=True)
class RegionError:
    """Summed squared errors (over pixels and channels, images in [0, 1]) of one region."""

    pixels: int
    makeup: float  # input vs target
    network: float  # output vs target

    @property
    def removed(self) -> float:
        """Fraction of the makeup error the network removed (negative: it added error)."""
        return 1 - self.network / self.makeup if self.makeup > 0 else math.nan

    @property
    def gain_db(self) -> float:
        return 10 * math.log10(self.makeup / self.network) if self.makeup > 0 and self.network > 0 else math.nan


def region_maps(data_dir: Path, split: str, names: list[str], inputs: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 `REGIONS` codes of the samples `names` (file names ``000123.jpg``) of a synthetic
    dataset, re-rendered from its synth.json on every core; `inputs` (N, S, S, 3) uint8 are the stored
    makeup images, checked against the re-rendering. ValueError when `data_dir` is not synthetic or does
    not match."""
    info = read_synth_info(data_dir)
    if info is None:
        raise ValueError(f"{data_dir} has no synth.json: region maps exist only for `demakeup synth` data")
    # One 224 px face takes ~0.5 s to render (one Xeon core): a GPU-scale test split of 128 faces, a minute.
    jobs = [(info["seed"], split, int(Path(name).stem), info["size"]) for name in names]
    rendered = parallel_map(_render_regions, jobs, workers=None, desc="region maps", progress=False)
    for name, stored, (makeup, _) in zip(names, inputs, rendered):
        mse = np.mean((makeup.astype(np.float64) - stored) ** 2) / 255**2
        if mse > 10 ** (-MATCH_DB / 10):
            raise ValueError(f"{data_dir}: {split} sample {name} is not the one synth.json (seed {info['seed']}, "
                             f"{info['size']} px) renders ({10 * math.log10(1 / max(mse, 1e-12)):.1f} dB apart): "
                             "the dataset was changed after `demakeup synth`")
    return np.stack([regions for _, regions in rendered])


def _render_regions(job: tuple[int, str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, split, index, size = job
    sample = render_sample(sample_rng(seed, split, index), size, regions=True)
    return sample["makeup"], sample["regions"]


def region_errors(inputs: torch.Tensor, targets: torch.Tensor, outputs: torch.Tensor,
                  maps: np.ndarray) -> dict[str, RegionError]:
    """Per region of `REGIONS`: the summed squared errors. Images float (N, 3, S, S) in [0, 1]; `maps` (N, S, S)."""
    labels = torch.as_tensor(maps, dtype=torch.long, device=inputs.device)
    makeup = (inputs.float() - targets.float()).pow(2).sum(1)  # (N, S, S)
    network = (outputs.float().clamp(0, 1) - targets.float()).pow(2).sum(1)
    return {name: RegionError(int((labels == code).sum()), float(makeup[labels == code].sum()),
                              float(network[labels == code].sum()))
            for code, name in enumerate(REGIONS)}


def add(a: dict[str, RegionError], b: dict[str, RegionError]) -> dict[str, RegionError]:
    return {k: RegionError(a[k].pixels + b[k].pixels, a[k].makeup + b[k].makeup, a[k].network + b[k].network)
            for k in a}


def split_region_maps(shards: Path, data_dir: Path, split: str = "test") -> dict[str, np.ndarray]:
    """File name -> (S, S) region map of every sample of `split` of `shards`, packed from the synthetic
    `data_dir` (`region_maps`: rendered again once, checked against the stored inputs)."""
    from demakeup_dist.data.loader import eval_batches

    names, inputs = [], []
    for batch in eval_batches(shards, split, batch_size=32, with_hr=False, num_workers=0, uint8=True):
        names += batch["name"]
        inputs.append(batch["makeup"].permute(0, 2, 3, 1).numpy())
    return dict(zip(names, region_maps(data_dir, split, names, np.concatenate(inputs))))


@torch.inference_mode()
def evaluate_regions(run_dir: Path, model: str, shards: Path, maps: dict[str, np.ndarray], split: str = "test",
                     device: str | torch.device = "cpu", batch_size: int = 16) -> dict[str, RegionError]:
    """The best weights of `run_dir` on `split` of `shards`, per region of `maps` (`split_region_maps`)."""
    from demakeup_dist.data.loader import eval_batches, to_float
    from demakeup_dist.weights import load_trained

    net, _ = load_trained(run_dir, model, device)
    total = None
    for batch in eval_batches(shards, split, batch_size=batch_size, with_hr=False, num_workers=0, uint8=True):
        images = to_float(batch, device)
        errors = region_errors(images["makeup"], images["non_makeup"], net(images["makeup"])["demakeup"],
                               np.stack([maps[name] for name in batch["name"]]))
        total = errors if total is None else add(total, errors)
    if total is None:
        raise ValueError(f"{shards}: the {split} split is empty")
    return total


# The grid's rows on synthetic data: the test face with the most makeup error in each region, in this order.
SHOWCASE = (("lips", "strong lipstick"), ("eyes", "strong eye makeup"), ("cheeks", "strong blush / contour"),
            ("face", "strong foundation"))


def showcase_rows(shards: Path, maps: dict[str, np.ndarray], split: str = "test",
                  rows: int = 4) -> tuple[list[str], list[str]]:
    """(names, labels) of `rows` distinct samples of `split`, each the one with the most makeup error in a
    region of SHOWCASE (then the next SHOWCASE region, cycling), so the pictures show each kind of makeup.
    `maps`: the split's region maps (`split_region_maps`)."""
    from demakeup_dist.data.loader import eval_batches

    per_image: dict[str, dict[str, float]] = {}
    for batch in eval_batches(shards, split, batch_size=32, with_hr=False, num_workers=0, uint8=True):
        x, y = batch["makeup"].float() / 255, batch["non_makeup"].float() / 255
        for i, name in enumerate(batch["name"]):
            errors = region_errors(x[i : i + 1], y[i : i + 1], x[i : i + 1], maps[name][None])
            per_image[name] = {k: e.makeup for k, e in errors.items()}
    names, labels = [], []
    for k in range(min(rows, len(per_image))):
        region, label = SHOWCASE[k % len(SHOWCASE)]
        best = max((n for n in per_image if n not in names), key=lambda n: per_image[n][region])
        names.append(best)
        labels.append(label)
    return names, labels


def table(errors: dict[str, list[dict[str, RegionError]]]) -> str:
    """Markdown: per region its share of the pixels and of the makeup error, then per network the % of that
    makeup error it removed and the gain in dB (mean +- std over the seeds). `errors`: model -> one
    `evaluate_regions` result per seed (all on the same split)."""
    from demakeup_dist.seeds import spread

    first = next(iter(errors.values()))[0]
    pixels, makeup = sum(e.pixels for e in first.values()), sum(e.makeup for e in first.values())
    models = list(errors)
    lines = ["| region | pixels | share of the makeup error | " + " | ".join(f"{m}: removed" for m in models) + " |",
             "|---|---:|---:|" + "---:|" * len(models)]
    for region in reversed(REGIONS):  # lips first: the makeup a reader looks for
        cells = []
        for model in models:
            removed = spread(100 * seed[region].removed for seed in errors[model])
            gain = spread(seed[region].gain_db for seed in errors[model])
            # Background has no makeup, only JPEG noise: a % of that would read as a large loss for a change
            # of a few hundredths of a dB; its dB alone says what the network changed there.
            cells.append(f"{_pm(gain, 2)} dB" if region == "background" else f"{_pm(removed, 0)} % ({_pm(gain, 2)} dB)")
        lines.append(f"| {region} | {100 * first[region].pixels / pixels:.1f} % | "
                     f"{100 * first[region].makeup / makeup:.1f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(value, digits: int) -> str:
    return f"{value.mean:+.{digits}f}" + (f" +- {value.std:.{digits}f}" if value.n > 1 else "")


def synthetic_source(shards: Path) -> Path | None:
    """The `demakeup synth` dataset `shards` were packed from (the manifest's source, holding synth.json),
    or None for other data or when that folder is gone."""
    from demakeup_dist.data.shards import load_manifest

    source = load_manifest(shards).get("source")
    return Path(source) if source and read_synth_info(Path(source)) is not None else None
