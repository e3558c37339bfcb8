"""Measure how far tiled whole-image inference is from untiled inference (InstanceNorm makes a tile's
output depend on the tile's content), to choose predict's default tile size.

    python scripts/measure_tiling.py RUN_OR_WEIGHTS [PHOTO] [--tiles 128,256] [--overlaps 32,64]

PHOTO defaults to scikit-image's astronaut (512 x 512). Prints, per tile size and overlap, the max and
mean absolute difference in 8-bit levels of each output against the untiled output.
"""

from __future__ import annotations

import argparse

import numpy as np

from demakeup_dist.infer.photos import load_photo
from demakeup_dist.infer.runner import torch_runner
from demakeup_dist.infer.tiles import predict_tiled
from demakeup_dist.weights import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("photo", nargs="?")
    parser.add_argument("--tiles", default="128,256")
    parser.add_argument("--overlaps", default="32,64")
    args = parser.parse_args()
    if args.photo:
        photo = load_photo(args.photo)
    else:
        import skimage.data

        photo = skimage.data.astronaut()
    net, info = load_trained(args.weights)
    runner = torch_runner(net, image_size=info.image_size, name=info.model)
    whole = predict_tiled(runner, photo, tile=max(photo.shape[:2]) + 32, overlap=0)
    print(f"{info.model} trained at {info.image_size} px on a {photo.shape[1]}x{photo.shape[0]} photo")
    for tile in map(int, args.tiles.split(",")):
        for overlap in map(int, args.overlaps.split(",")):
            tiled = predict_tiled(runner, photo, tile=tile, overlap=min(overlap, tile // 2), batch_size=4)
            for task, pixels in tiled.items():
                diff = np.abs(pixels.astype(int) - whole[task])
                print(f"tile {tile} overlap {overlap} {task}: max {diff.max()} mean {diff.mean():.3f} levels; "
                      f"99.9th percentile {np.percentile(diff, 99.9):.0f}")


if __name__ == "__main__":
    main()
