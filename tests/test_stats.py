"""Paired statistics on hand-made verdicts whose answers are known."""

import math

import pytest

from factmem.stats import mean_std_text, paired_difference


def test_identical_strategies_differ_by_nothing():
    verdicts = [True, False, True, True, False, False, True, False]
    result = paired_difference([(verdicts, verdicts), (verdicts[::-1], verdicts[::-1])])
    assert result.difference == 0.0
    assert (result.low, result.high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert result.verdict == "not established"
    assert (result.facts, result.seeds) == (16, 2)


def test_a_strategy_that_keeps_every_fact_is_established_higher():
    result = paired_difference([([True] * 25, [False] * 25), ([True] * 25, [False] * 25)])
    assert result.difference == 100.0
    assert (result.low, result.high) == (100.0, 100.0)
    assert (result.only_strategy, result.only_baseline) == (50, 0)
    assert math.isclose(result.p_value, 2 * 0.5**50)
    assert result.verdict == "higher"


def test_mcnemar_exact_p_value_by_hand():
    # 8 facts kept only by the strategy, 2 only by the baseline, 10 by both:
    # two-sided exact p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    strategy = [True] * 8 + [False] * 2 + [True] * 10
    baseline = [False] * 8 + [True] * 2 + [True] * 10
    result = paired_difference([(strategy, baseline)])
    assert (result.only_strategy, result.only_baseline) == (8, 2)
    assert math.isclose(result.p_value, 2 * 56 / 1024)
    assert result.difference == pytest.approx(30.0)


def test_interval_covers_zero_for_a_small_mixed_difference():
    # 3 kept only by the strategy and 2 only by the baseline among 40 facts: not established.
    strategy = [True] * 3 + [False] * 2 + [True] * 15 + [False] * 20
    baseline = [False] * 3 + [True] * 2 + [True] * 15 + [False] * 20
    result = paired_difference([(strategy, baseline)])
    assert result.difference == pytest.approx(2.5)
    assert result.low < 0 < result.high
    assert result.verdict == "not established"


def test_a_bootstrap_interval_above_zero_is_not_enough_when_mcnemar_disagrees():
    # 5 of 32 facts kept only by the strategy, none only by the baseline. A resample misses
    # all 5 with probability (27/32)^32 = 0.004 < 0.025, so the interval lies above 0; but
    # McNemar's exact p = 2 * 0.5^5 = 0.0625: the direction is not established.
    strategy = [True] * 5 + [False] * 27
    baseline = [False] * 32
    result = paired_difference([(strategy, baseline)])
    assert result.low > 0
    assert math.isclose(result.p_value, 2 * 0.5**5)
    assert result.verdict == "not established"
    # one more such fact: p = 2 * 0.5^6 = 0.031 < 0.05, and the interval still excludes 0
    result = paired_difference([([True] * 6 + [False] * 26, baseline)])
    assert result.low > 0 and result.verdict == "higher"


def test_bootstrap_resamples_within_seeds():
    # Seed 0: the strategy wins every fact; seed 1: they tie on every fact. Resampling within
    # seeds keeps each seed's size, so every resample gives exactly 50 points.
    result = paired_difference([([True] * 10, [False] * 10), ([True] * 10, [True] * 10)])
    assert (result.low, result.high) == (50.0, 50.0)


def test_bootstrap_is_reproducible_and_lower_verdict():
    strategy = [False] * 12 + [True] * 2 + [True] * 6
    baseline = [True] * 12 + [False] * 2 + [True] * 6
    first = paired_difference([(strategy, baseline)])
    assert first == paired_difference([(strategy, baseline)])
    assert first.difference == pytest.approx(-50.0)
    assert first.verdict == "lower"


def test_mismatched_pairs_are_an_error():
    with pytest.raises(ValueError):
        paired_difference([([True, False], [True])])
    with pytest.raises(ValueError):
        paired_difference([])


def test_mean_std_text_shows_no_spread_for_one_run():
    assert mean_std_text([0.5625]) == "0.6 (n=1)"
    assert mean_std_text([10.0, 20.0, 30.0]) == "20.0 ± 10.0"
    assert mean_std_text([10.0, 20.0]) == "15.0 ± 7.1 (n=2)"
    assert mean_std_text([]) == ""


def _seed(kept_only_with: int, kept_only_without: int, facts: int = 32):
    strategy, baseline = [True] * facts, [True] * facts
    for i in range(kept_only_with):
        baseline[i] = False
    for i in range(kept_only_with, kept_only_with + kept_only_without):
        strategy[i] = False
    return strategy, baseline


def test_the_seed_level_interval_sees_what_facts_within_seeds_cannot():
    # one seed gains every fact, two gain none: every fact-level resample gives +33.3,
    # while drawing seeds gives 0 (no draw of the first seed, 8/27 of draws) up to 100
    # (three draws of it, 1/27 > 2.5%): exactly [0, 100]
    result = paired_difference([_seed(32, 0), _seed(0, 0), _seed(0, 0)])
    assert (result.low, result.high) == pytest.approx((100 / 3, 100 / 3))
    assert (result.seed_low, result.seed_high) == (0.0, 100.0)
    assert result.p_value < 1e-6
    assert result.verdict == "not established"  # the fact level and McNemar alone would say higher
    assert result.seed_interval() == "[+0.0, +100.0]"


def test_seeds_that_disagree_are_not_established_though_facts_and_mcnemar_agree():
    result = paired_difference([_seed(12, 0), _seed(12, 0), _seed(0, 4)])
    assert result.low > 0 and result.p_value < 0.05  # the fact level alone: higher
    assert result.seed_low < 0 < result.seed_high
    assert result.verdict == "not established"


def test_seeds_that_agree_give_both_intervals_one_side():
    result = paired_difference([_seed(9, 0), _seed(8, 1), _seed(10, 0)])
    assert result.low > 0 and result.seed_low > 0 and result.verdict == "higher"
    lower = paired_difference([_seed(0, 9), _seed(1, 8), _seed(0, 10)])
    assert lower.high < 0 and lower.seed_high < 0 and lower.verdict == "lower"
    # with one seed there is nothing to draw but that seed: both intervals resample its facts
    one = paired_difference([_seed(9, 2)])
    assert one.seed_low == pytest.approx(one.low, abs=3.2) and one.seed_high == pytest.approx(
        one.high, abs=3.2)
