"""How sure an accuracy drop is: each validation sample is judged by the build and by its fp32 reference, so the two
top-1 accuracies are paired, and what matters is the samples on which they disagree.

With n samples, b of them right only for the build and c right only for the reference, the drop is (c - b) / n.
- McNemar's exact test: under "no difference", each of the b + c discordant samples is equally likely to go either
  way, so b ~ Binomial(b + c, 1/2); the two-sided p-value is scipy's `binomtest` (numpy's sum where scipy is absent).
- The paired bootstrap resamples the n samples with replacement and recomputes the drop. A resample is fully
  described by how many of its samples fall in each cell (build only, reference only, both or neither), so it is
  drawn as one multinomial over those counts: the same distribution as resampling a million samples one by one,
  in microseconds. The interval is its percentiles at the confidence asked for, from a fixed seed (the same tables
  give the same answer).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0


@dataclass(frozen=True)
class Drop:
    """A paired top-1 drop (reference minus build, so positive: the build is less accurate) and how sure it is."""
    n: int
    run_only: int        # b: samples only the build got right
    reference_only: int  # c: samples only the reference got right
    low: float
    high: float
    confidence: float
    p_value: float       # McNemar's exact test of "the two are equally accurate"

    @property
    def value(self) -> float:
        return (self.reference_only - self.run_only) / self.n if self.n else 0.0

    def text(self) -> str:
        """'drop 0.002 [-0.001, 0.006] at 95 %'."""
        return f"drop {self.value:.3f} [{self.low:.3f}, {self.high:.3f}] at {self.confidence * 100:g} %"

    def samples_to_decide(self, bound: float) -> int | None:
        """About how many samples would put the interval on one side of `bound`, when it straddles it now (its width
        shrinks as 1/sqrt(n) at the same discordance); None when it is decided already or cannot be told."""
        if not self.low <= bound < self.high or not self.n:
            return None
        half = self.high - self.value if self.value <= bound else self.value - self.low
        gap = abs(bound - self.value)
        if half <= 0:
            return None
        if gap == 0:  # exactly at the bound: no number of samples decides it; say the scale of a clear answer
            gap = half / 2
        return int(math.ceil(self.n * (half / gap) ** 2))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest
    except ImportError:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    return float(binomtest(b, n, 0.5).pvalue)


def bootstrap_drop(n: int, run_only: int, reference_only: int, confidence: float = 0.95,
                   resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The percentile interval of the paired top-1 drop (c - b) / n over `resamples` paired bootstrap resamples."""
    if n <= 0:
        raise ValueError(f"a paired bootstrap needs samples, got n={n}")
    if run_only + reference_only > n:
        raise ValueError(f"{run_only} + {reference_only} discordant samples of only {n}")
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, [run_only / n, reference_only / n, 1 - (run_only + reference_only) / n],
                            size=resamples)
    drops = (cells[:, 1] - cells[:, 0]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(drops, [tail, 1 - tail])
    return float(low), float(high)


@functools.lru_cache(maxsize=4096)  # the end of a sweep judges each point three times: table, choice, report
def drop(n: int, run_only: int, reference_only: int, confidence: float = 0.95) -> Drop:
    """The paired drop of `n` samples with `run_only` (b) and `reference_only` (c) discordant ones."""
    low, high = bootstrap_drop(n, run_only, reference_only, confidence)
    return Drop(n, run_only, reference_only, low, high, confidence, mcnemar_exact(run_only, reference_only))


def counts(run_correct, reference_correct) -> tuple[int, int, int]:
    """(n, b, c) of per-sample correctness (the `predictions` table's run_correct and reference_correct)."""
    run, ref = np.asarray(run_correct, dtype=bool), np.asarray(reference_correct, dtype=bool)
    return len(run), int(np.sum(run & ~ref)), int(np.sum(ref & ~run))
