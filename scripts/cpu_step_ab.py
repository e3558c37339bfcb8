"""Interleaved A/B of the CPU train step's optimizer and memory format (docs/performance.md, issue 18).

    python scripts/cpu_step_ab.py [--model p3] [--size 64] [--batch-size 8] [--threads 1] [--rounds 12]

The training loop's own step (ModelLoss, clip, AdamW) on one synthetic uint8 batch, one step of each
variant in turn, so a shared machine's load falls on all of them alike; prints the median and the
fastest step of each. Variants: AdamW foreach (torch's default on CPU before issue 18) or fused (what
`demakeup train` runs now), NCHW or channels_last.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from demakeup_dist.models import build_model
from demakeup_dist.train.recipe import TARGET_KEYS
from demakeup_dist.train.step import ModelLoss

VARIANTS = {"nchw + foreach": (False, False), "nchw + fused": (False, True), "channels_last + fused": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="p3")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per variant (after 2 warm-up rounds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    cases = {}
    for name, (channels_last, fused) in VARIANTS.items():
        torch.manual_seed(0)
        net = build_model(args.model, residual=True)
        net = net.to(memory_format=torch.channels_last) if channels_last else net
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=fused or None, foreach=None if fused else True)
        cases[name] = (net, ModelLoss(net, {"demakeup": 1.0, "sr": 1.0}, 100.0), opt, channels_last)
    side = {"makeup": args.size, **{TARGET_KEYS[t]: (4 if t == "sr" else 1) * args.size for t in net.tasks}}
    batch = {k: torch.randint(0, 256, (args.batch_size, 3, s, s), generator=gen, dtype=torch.uint8)
             for k, s in side.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds + 2):
        for name, (net, module, opt, channels_last) in cases.items():
            x = batch["makeup"].contiguous(memory_format=torch.channels_last) if channels_last else batch["makeup"]
            began = time.perf_counter()
            module(x, {t: batch[TARGET_KEYS[t]] for t in net.tasks}).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if round_ >= 2:
                times[name].append(time.perf_counter() - began)
    print(f"{args.model}, {args.size} px, batch {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<22} median {1000 * median:6.0f} ms/step ({args.batch_size / median:5.1f} img/s), "
              f"fastest {1000 * min(values):6.0f} ms")


if __name__ == "__main__":
    main()
