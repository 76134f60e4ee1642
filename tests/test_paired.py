"""The paired statistics of an accuracy drop (pipeline/analysis/paired.py) against published and textbook values:
McNemar's exact test, the paired bootstrap interval against the normal-theory (Wald) interval for paired
proportions and its coverage of a known drop, and how many samples it would take to decide."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from pipeline.analysis import paired


def test_mcnemar_exact_matches_the_published_example():
    # Fagerland, Lydersen & Laake, BMC Med Res Methodol 13:91 (2013), airway hyper-responsiveness before and after
    # stem cell transplantation: n12 = 1, n21 = 7 discordant pairs; exact conditional p = 0.070 (= 2 * 9 / 256)
    assert paired.mcnemar_exact(1, 7) == pytest.approx(18 / 256)
    assert round(paired.mcnemar_exact(1, 7), 3) == 0.070
    assert paired.mcnemar_exact(7, 1) == paired.mcnemar_exact(1, 7)  # two-sided: symmetric
    assert paired.mcnemar_exact(0, 0) == 1.0 and paired.mcnemar_exact(5, 5) == 1.0


def test_mcnemar_without_scipy_gives_the_same_p(monkeypatch):
    with_scipy = [paired.mcnemar_exact(b, c) for b, c in ((1, 7), (3, 12), (40, 61), (0, 9))]
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `from scipy.stats import ...` raises ImportError
    assert [paired.mcnemar_exact(b, c) for b, c in ((1, 7), (3, 12), (40, 61), (0, 9))] == pytest.approx(with_scipy)


def test_bootstrap_agrees_with_the_wald_interval_for_paired_proportions():
    # Agresti, Categorical Data Analysis (3rd ed.) 11.1.4: the difference of paired proportions (c - b) / n has
    # variance ((b + c) / n - d^2) / n; with many samples the bootstrap percentiles meet the normal interval
    n, b, c = 20_000, 150, 330
    d = (c - b) / n
    half = 1.959964 * math.sqrt(((b + c) / n - d * d) / n)
    low, high = paired.bootstrap_drop(n, b, c, 0.95)
    assert low == pytest.approx(d - half, abs=2e-4) and high == pytest.approx(d + half, abs=2e-4)
    wider = paired.bootstrap_drop(n, b, c, 0.99)
    assert wider[0] < low and wider[1] > high  # more confidence, a wider interval


def test_bootstrap_interval_covers_a_known_drop_about_as_often_as_it_says():
    rng = np.random.default_rng(1234)
    true_b, true_c, n = 0.02, 0.05, 400  # a drop of 0.03
    covered = 0
    for _ in range(300):
        cells = rng.multinomial(n, [true_b, true_c, 1 - true_b - true_c])
        low, high = paired.bootstrap_drop(n, int(cells[0]), int(cells[1]), 0.95, resamples=2000)
        covered += low <= true_c - true_b <= high
    assert 0.90 <= covered / 300 <= 0.99, covered


def test_the_same_counts_give_the_same_interval():
    assert paired.bootstrap_drop(359, 2, 5) == paired.bootstrap_drop(359, 2, 5)  # a fixed seed: reproducible


def test_counts_from_per_sample_records():
    run = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    ref = np.array([1, 0, 1, 1, 1, 0], dtype=bool)
    assert paired.counts(run, ref) == (6, 1, 2)


def test_samples_to_decide_scales_as_one_over_sqrt_n():
    drop = paired.Drop(n=1000, run_only=2, reference_only=10, low=0.002, high=0.014, confidence=0.95, p_value=0.04)
    assert drop.value == pytest.approx(0.008)
    # the upper half-width 0.006 must shrink to the gap 0.002: (0.006 / 0.002)^2 = 9 times the samples
    assert drop.samples_to_decide(0.01) == 9000
    assert drop.samples_to_decide(0.02) is None  # decided: within
    assert drop.samples_to_decide(0.001) is None  # decided: beyond
    assert drop.text() == "drop 0.008 [0.002, 0.014] at 95 %"


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="discordant"):
        paired.bootstrap_drop(10, 6, 5)
