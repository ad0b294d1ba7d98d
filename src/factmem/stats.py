"""Paired comparison of two strategies on the same facts: is the difference established?

The paper reports means over 3 seeds and no test. Here every seed gives the same D_A facts
to every strategy, so a strategy and No Mixing can be compared fact by fact: the difference
in retention (percentage points) with a 95% bootstrap interval that resamples facts within
each seed (seeds are kept, as they are the design's strata), and McNemar's exact test on the
facts where the two disagree. A direction is established only when both say so: the
interval excludes 0 *and* McNemar's p < 0.05. The percentile bootstrap alone is lenient
when few facts differ (5 facts kept only by the strategy and none only by the baseline, of
32, give an interval above 0 but p = 0.06), and the exact test is the one to trust there.

The stratified bootstrap is written here (a few numpy lines) because scipy.stats.bootstrap
resamples whole samples, not within strata; McNemar's exact test is scipy's binomial test.
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
    low: float
    high: float
    only_strategy: int  # facts the strategy keeps and the baseline loses (McNemar's b)
    only_baseline: int  # facts the baseline keeps and the strategy loses (McNemar's c)
    p_value: float  # McNemar's exact two-sided test
    facts: int
    seeds: int

    @property
    def verdict(self) -> str:
        if self.p_value >= 1 - CONFIDENCE:
            return "not established"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "not established"

    def interval(self) -> str:
        return f"[{self.low:+.1f}, {self.high:+.1f}]"


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
    )


def mean_std_text(values: Sequence[float], digits: int = 1) -> str:
    """`mean ± std` (sample std) over seeds; one value has no spread, so no `± 0.0`."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(array):
        return ""
    if len(array) == 1:
        return f"{array[0]:.{digits}f} (n=1)"
    text = f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"
    return text if len(array) == 3 else f"{text} (n={len(array)})"
