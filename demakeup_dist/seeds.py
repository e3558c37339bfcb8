"""Seed statistics: mean +- std of a metric over seeds, and whether a difference exceeds the seed noise.

A difference between two configurations is called clear only when it exceeds twice the standard error
of the difference of their means, `2 * sqrt(sa^2 / na + sb^2 / nb)` (about a 95% interval for
normally distributed seed noise). With fewer than two seeds on either side there is no spread to
compare with, and nothing is called clear.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MIN_SEEDS = 2  # below this there is no spread, so no difference can be called clear
NOISE_FACTOR = 2.0  # a clear difference exceeds this many standard errors of the difference


@dataclass(frozen=True)
class Spread:
    """One metric over seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); 0 for a single seed."""
        return statistics.stdev(self.values) if self.n >= 2 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.2f} +- {self.std:.2f}" if self.n >= 2 else f"{self.mean:.2f}"


def spread(values) -> Spread:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("no values: at least one seed must have finished")
    return Spread(values)


@dataclass(frozen=True)
class Difference:
    """b - a for two Spreads, with the noise it is compared with."""

    delta: float
    noise: float  # NOISE_FACTOR standard errors of the difference; nan without spread

    @property
    def clear(self) -> bool:
        return not math.isnan(self.noise) and abs(self.delta) > self.noise

    def verdict(self, better: str = "yes", worse: str = "no, it hurts") -> str:
        if math.isnan(self.noise):
            return "not decided (one seed: no spread measured)"
        if not self.clear:
            return "no clear difference (within the seed noise)"
        return better if self.delta > 0 else worse

    def __str__(self) -> str:
        noise = "" if math.isnan(self.noise) else f", noise +-{self.noise:.2f}"
        return f"{self.delta:+.2f} dB{noise}"


def difference(a: Spread, b: Spread) -> Difference:
    """b.mean - a.mean and the noise band it must exceed to be clear."""
    if min(a.n, b.n) < MIN_SEEDS:
        return Difference(b.mean - a.mean, math.nan)
    return Difference(b.mean - a.mean, NOISE_FACTOR * math.sqrt(a.std**2 / a.n + b.std**2 / b.n))
