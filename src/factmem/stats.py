"""Paired comparison of two strategies on the same facts: is the difference established?

The paper reports means over 3 seeds and no test. Here every seed gives the same D_A facts
to every strategy, so a strategy and No Mixing can be compared fact by fact: the difference
in retention (percentage points) with two 95% bootstrap intervals, and McNemar's exact test
on the facts where the two disagree.

* The **fact-level** interval resamples facts within each seed (seeds kept as strata): how
  sure the difference is for *these* seeds' runs.
* The **seed-level** (hierarchical) interval resamples seeds, then facts within each drawn
  seed: how sure it is for another draw of seeds. Seeds differ far more than facts do here
  (one cell: +31, +19 and -44 points over its three seeds), and only this interval sees it.

A direction is established only when all three say so: both intervals exclude 0 on the
same side *and* McNemar's p < 0.05. The percentile bootstrap alone is lenient when few
facts differ (5 facts kept only by the strategy and none only by the baseline, of 32, give
an interval above 0 but p = 0.06), and the exact test is the one to trust there.

Both bootstraps are written here (a few numpy lines) because scipy.stats.bootstrap
resamples whole samples, not within strata or in two levels; McNemar's exact test is
scipy's binomial test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Strategy minus baseline, pooled over seeds, in percentage points."""

    difference: float
    low: float  # fact-level interval (facts resampled within seeds)
    high: float
    only_strategy: int  # facts the strategy keeps and the baseline loses (McNemar's b)
    only_baseline: int  # facts the baseline keeps and the strategy loses (McNemar's c)
    p_value: float  # McNemar's exact two-sided test
    facts: int
    seeds: int
    seed_low: float = float("nan")  # seed-level interval (seeds, then facts, resampled)
    seed_high: float = float("nan")

    @property
    def verdict(self) -> str:
        if self.p_value >= 1 - CONFIDENCE:
            return "not established"
        if self.low > 0 and self.seed_low > 0:
            return "higher"
        if self.high < 0 and self.seed_high < 0:
            return "lower"
        return "not established"

    def interval(self) -> str:
        return f"[{self.low:+.1f}, {self.high:+.1f}]"

    def seed_interval(self) -> str:
        return f"[{self.seed_low:+.1f}, {self.seed_high:+.1f}]"


def paired_difference(
    pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedDifference:
    """`pairs`: per seed, (strategy's verdicts, baseline's verdicts) on the same facts in the
    same order. The bootstrap is seeded, so a report is reproducible."""
    diffs = []
    for strategy, baseline in pairs:
        a, b = np.asarray(strategy, dtype=float), np.asarray(baseline, dtype=float)
        if a.shape != b.shape or a.ndim != 1 or not len(a):
            raise ValueError("each pair needs two equally long, non-empty lists of verdicts")
        diffs.append(a - b)
    if not diffs:
        raise ValueError("no pairs to compare")
    total = sum(len(d) for d in diffs)
    rng = np.random.default_rng(seed)
    sums = np.zeros(resamples)
    for d in diffs:  # resample facts within each seed, the same number as it has
        sums += d[rng.integers(0, len(d), size=(resamples, len(d)))].sum(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(sums / total * 100, [tail, 1 - tail])
    seed_low, seed_high = np.quantile(_two_level_resamples(diffs, resamples, rng) * 100,
                                      [tail, 1 - tail])  # fmt: skip
    only_strategy = int(sum((d > 0).sum() for d in diffs))
    only_baseline = int(sum((d < 0).sum() for d in diffs))
    discordant = only_strategy + only_baseline
    p_value = binomtest(only_strategy, discordant, 0.5).pvalue if discordant else 1.0
    return PairedDifference(
        difference=float(sum(d.sum() for d in diffs) / total * 100),
        low=float(low),
        high=float(high),
        only_strategy=only_strategy,
        only_baseline=only_baseline,
        p_value=float(p_value),
        facts=total,
        seeds=len(diffs),
        seed_low=float(seed_low),
        seed_high=float(seed_high),
    )


def _two_level_resamples(diffs: list[np.ndarray], resamples: int, rng: np.random.Generator
                         ) -> np.ndarray:  # fmt: skip
    """Pooled mean difference of each hierarchical resample: as many seeds as there are,
    drawn with replacement, and each drawn seed's facts resampled anew (a seed drawn twice
    gets two independent fact resamples)."""
    k = len(diffs)
    drawn = rng.integers(0, k, size=(resamples, k))
    sums, counts = np.zeros(resamples), np.zeros(resamples)
    for position in range(k):
        for seed, d in enumerate(diffs):
            rows = np.flatnonzero(drawn[:, position] == seed)
            picks = d[rng.integers(0, len(d), size=(len(rows), len(d)))]
            sums[rows] += picks.sum(axis=1)
            counts[rows] += len(d)
    return sums / counts


def mean_std_text(values: Sequence[float], digits: int = 1) -> str:
    """`mean ± std` (sample std) over seeds; one value has no spread, so no `± 0.0`."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(array):
        return ""
    if len(array) == 1:
        return f"{array[0]:.{digits}f} (n=1)"
    text = f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"
    return text if len(array) == 3 else f"{text} (n={len(array)})"
