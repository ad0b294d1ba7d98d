"""The regime map: the rule that picks a regime point, applied to hand-made runs with a known
answer, held to the words of the grid file that fixed it before the runs."""

from pathlib import Path

import pandas as pd
from test_report import KVR, _write_run

from factmem.config import load_config
from factmem.grid import load_grid
from factmem.regime_map import (
    D_B_AT_LEAST,
    D_B_LOSS_BELOW,
    MAP_TITLE,
    RETENTION_ABOVE,
    RETENTION_BELOW,
    STAGE1_AT_LEAST,
    chosen_text,
    map_rows,
    map_table,
)
from factmem.report import write_report

GRID = Path(__file__).parents[1] / "configs" / "grids" / "regime-map.yaml"


def _runs(points: list[tuple], loss: float | None = None) -> pd.DataFrame:
    """(pair's D_B, facts, lr, D_A after stage 1, D_B after stage 2, D_A after stage 2);
    `loss`: the last stage's last-epoch training loss (what says a GSM8K D_B was learned)."""
    return pd.DataFrame([{
        "stages": 2, "strategy": "No Mixing", "d_a": "popqa", "d_b": d_b, "facts": facts,
        "learning_rate": lr, "da_first": first, "db_final": db, "da_final": final,
        "last_loss": loss,
        "da_status": {"kept": 1, "hidden": 1, "lost": 2}, "steps_by_stage": [facts // 32] * 2,
        "variant": "", "db_size": 32 if d_b == "gsm8k" else facts,
    } for d_b, facts, lr, first, db, final in points])  # fmt: skip


def test_the_rule_prefers_most_facts_then_the_lowest_rate_among_usable_points():
    rows = map_rows(_runs([
        ("lama", 512, 5e-5, 0.50, 1.00, 0.40),   # stage 1 did not memorise
        ("lama", 512, 1e-4, 0.97, 0.99, 0.30),   # usable: the most facts -> chosen
        ("lama", 512, 3e-4, 0.99, 1.00, 0.60),   # usable, but a higher rate
        ("lama", 128, 5e-5, 1.00, 1.00, 0.50),   # usable, fewer facts
        ("lama", 32, 3e-4, 1.00, 0.90, 0.50),    # D_B not learned
        ("gsm8k", 32, 3e-4, 1.00, 1.00, 0.0),    # the KVR floor: retention 0
        ("gsm8k", 128, 3e-4, 1.00, 1.00, 0.95),  # retention above 90%
    ]))
    chosen = rows[rows["chosen"]]
    assert chosen[["pair", "facts", "learning_rate"]].values.tolist() == [
        ["popqa -> lama", 512, 1e-4]]
    lama = rows[rows["pair"] == "popqa -> lama"].set_index(["facts", "learning_rate"])
    assert "stage 1 did not memorise" in lama.loc[(512, 5e-5), "why"]
    assert "D_B not learned" in lama.loc[(32, 3e-4), "why"]
    assert lama["usable"].sum() == 3
    gsm = rows[rows["pair"] == "popqa -> gsm8k (D_B 32)"]
    assert not gsm["usable"].any()  # no point lifts the floor: nothing chosen
    assert "retention 95% outside" in " ".join(gsm["why"])
    # the report's first screen says the rule's answer per pair, a floor not lifted too
    assert chosen_text(rows) == ("popqa -> gsm8k (D_B 32): none of its 2 points run is "
                                 "usable; popqa -> lama: 512 facts, learning rate 0.0001")
    table = map_table(rows)
    assert table.loc[("popqa -> lama", 512, "0.0001"), "rule"] == "CHOSEN"
    assert table.loc[("popqa -> lama", 512, "0.0001"), "kept / hidden / lost"] == "1 / 1 / 2"


def test_a_non_factoid_d_b_is_learned_by_its_training_loss():
    points = [("gsm8k", 32, 3e-4, 1.0, None, 0.3), ("gsm8k", 128, 3e-4, 1.0, None, 0.3)]
    on_axis = {"variant": "facts=32"}  # the grid's facts axis makes it a map
    learned = map_rows(_runs(points, loss=D_B_LOSS_BELOW / 2).assign(**on_axis))
    assert learned["usable"].all() and learned["chosen"].sum() == 1
    assert map_table(learned)["D_B after stage 2"].tolist() == ["loss 0.025"] * 2
    unlearned = map_rows(_runs(points, loss=D_B_LOSS_BELOW * 2).assign(**on_axis))
    assert not unlearned["usable"].any() and "loss 0.1, not < 0.05" in unlearned["why"].iloc[0]


def test_two_sizes_of_a_fixed_size_d_b_are_two_pairs_of_the_map():
    """KVR -> GSM8K holds GSM8K at 32 examples; the same facts and rate with 128 GSM8K
    examples is another point of the map, with its own chosen point, never a second seed."""
    runs = _runs([("gsm8k", 128, 5e-5, 1.0, None, 0.07), ("gsm8k", 128, 5e-5, 1.0, None, 0.2),
                  ("gsm8k", 128, 1e-4, 1.0, None, 0.5)], loss=D_B_LOSS_BELOW / 2)
    runs.loc[1:, "db_size"] = 128
    rows = map_rows(runs.assign(variant="facts=128")).set_index(["pair", "learning_rate"])
    assert rows["seeds"].tolist() == [1, 1, 1]
    assert rows.loc[("popqa -> gsm8k (D_B 32)", 5e-5), "da_final"] == 0.07
    assert rows.loc[("popqa -> gsm8k (D_B 128)", 5e-5), "da_final"] == 0.2
    assert rows["chosen"].sum() == 1  # D_B 32's point is not usable (retention 7% < 10%)
    assert rows.loc[("popqa -> gsm8k (D_B 128)", 5e-5), "chosen"]


def test_a_map_needs_two_fact_counts_and_two_rates_or_a_facts_axis():
    sweep = _runs([("lama", 32, 3e-4, 1, 1, 0.5), ("lama", 32, 1e-4, 1, 1, 0.5)])
    assert map_rows(sweep.assign(variant="training.learning_rate=0.0003")).empty
    partial = map_rows(sweep.assign(variant="facts=32, training.learning_rate=0.0003"))
    assert len(partial) == 2  # the regime-map grid's first row, before the others have run


def test_the_grid_file_states_the_rule_this_module_applies():
    text = " ".join(line.lstrip("# ").strip() for line in GRID.read_text().splitlines())
    assert f"exact match after stage 1 >= {STAGE1_AT_LEAST:.0%}" in text
    assert f"D_B exact match after stage 2 >= {D_B_AT_LEAST:.0%}" in text
    assert f"strictly between {RETENTION_ABOVE:.0%} and {RETENTION_BELOW:.0%}" in text
    assert "most facts per stage first (most optimizer steps), then the lowest learning" in text
    assert f"training loss is below {D_B_LOSS_BELOW:g}" in text  # the amendment


def test_the_grid_holds_d_b_of_kvr_fixed_and_grows_popqa_with_the_facts():
    grid = load_grid(GRID, data_dir="/data")
    assert len(grid.runs) == 27  # 3 facts x 3 rates x 3 pairs (amendment 2: GSM8K at 128)
    for run in grid.runs:
        facts = int(run.tags["facts"])
        first, second = run.config.stages
        assert first.size == facts and first.stop.exact_match_at_least == STAGE1_AT_LEAST
        assert second.stop.loss_below == 1e-4 and second.stop.max_epochs == 20
        if run.tags["pair"] == "kvr-gsm8k":
            assert (first.dataset, second.dataset, second.size) == ("kvr", "gsm8k", 32)
        elif run.tags["pair"] == "kvr-gsm8k128":
            assert (first.dataset, second.dataset, second.size) == ("kvr", "gsm8k", 128)
        else:
            assert (first.dataset, second.dataset, second.size) == ("popqa", "lama", facts)


def test_a_report_of_a_map_opens_with_it(tmp_path):
    root = tmp_path / "runs"
    for facts, lr, final in [(8, 3e-4, 0.0), (8, 1e-4, 0.5), (16, 3e-4, 0.25), (16, 1e-4, 1.0)]:
        config = load_config({
            "name": f"f{facts}_lr{lr:g}", "seed": 0, "training": {"learning_rate": lr},
            "tags": {"facts": str(facts), "lr": f"{lr:g}"},
            "stages": [{"name": "D_A", "dataset": "kvr", "size": facts, "options": KVR,
                        "stop": {"epochs": 1}},
                       {"name": "D_B", "dataset": "kvr_id", "size": 8, "stop": {"epochs": 1}}],
        })  # fmt: skip
        _write_run(root, config, [1.0, final])
    page = write_report(root, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "regime_map.png").stat().st_size > 1000
    assert markdown.index("## What was run") < markdown.index("regime_map.png") < markdown.index(
        f"## {MAP_TITLE}")
    assert markdown.index(MAP_TITLE) < markdown.index("## D_A exact match after stage 2")
    chosen = [line for line in markdown.splitlines() if "CHOSEN" in line]
    assert len(chosen) == 1 and "| 16 " in chosen[0] and "0.0003" in chosen[0]  # 25%: usable
    assert page.is_file()
