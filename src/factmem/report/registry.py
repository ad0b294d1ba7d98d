"""Every table a report can hold, in page order: its stable file name, its title, and the
function that builds it. A new table is one function and one row here; its files keep their
names wherever it sits on the page (scripts and readers use them), and the docs script and
the tests read titles from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from factmem.regime_map import MAP_TITLE, map_rows, map_table
from factmem.report.paired import d_b_rows, paired_rows, paper_vs_ours
from factmem.report.regimes import CONTRAST_TITLE, regime_contrast, scored_regimes
from factmem.report.rows import db_group
from factmem.report.tables import (
    CONTROLS_TITLE,
    CURVE_TITLE,
    D_B_TITLE,
    LOSS_TITLE,
    STATUS_TITLE,
    controls_table,
    curve_table,
    d_b_table,
    loss_table,
    paired_table,
    paper_table,
    per_seed_table,
    replay_table,
    stage_table,
    status_table,
    summary_table,
)

EMPTY = pd.DataFrame()


@dataclass
class ReportRuns:
    """What the builders read: every run, the subsets they share (each computed once), and
    the paper's published numbers when asked for (`--paper`)."""

    runs: pd.DataFrame
    published: pd.DataFrame | None = None
    controls: tuple[str, ...] = ()  # strategies to pair every other against (`--versus`)

    @cached_property
    def two_stage(self) -> pd.DataFrame:
        return self.runs[self.runs["stages"] == 2]

    @cached_property
    def multi_stage(self) -> pd.DataFrame:
        return self.runs[self.runs["stages"] >= 3]

    @cached_property
    def regime(self) -> pd.DataFrame:
        return map_rows(self.runs)

    @cached_property
    def by_regime(self) -> list:
        """Each regime the two-stage runs hold, scored once (report.regimes.scored_regimes)."""
        return scored_regimes(self.two_stage, self.published)

    @cached_property
    def contrast(self) -> pd.DataFrame:
        """The paper's cells under each regime the runs hold, side by side (report.regimes)."""
        return regime_contrast(self.two_stage, self.published, self.by_regime)

    @cached_property
    def paired(self) -> pd.DataFrame:
        return paired_table(self.runs)

    @cached_property
    def plain_pairs(self) -> pd.DataFrame:
        """Paired differences of the two-stage runs without a variant tag: the paper's cells."""
        return paired_rows(self.two_stage[self.two_stage["variant"] == ""])

    @cached_property
    def d_b_pairs(self) -> pd.DataFrame:
        """One D_B against another, fact by fact (paired.d_b_rows): its table and the forest."""
        return d_b_rows(self.two_stage) if not self.two_stage.empty else EMPTY

    @cached_property
    def versus(self) -> pd.DataFrame:
        if self.published is None:
            return EMPTY
        return paper_vs_ours(self.two_stage, self.published, self.plain_pairs)


@dataclass(frozen=True)
class Table:
    stem: str  # <stem>.csv and <stem>.tex, whatever else the page holds
    title: str
    build: Callable[[ReportRuns], pd.DataFrame]  # empty: not on this page


def _if_two_stage(value: str) -> Callable[[ReportRuns], pd.DataFrame]:
    return lambda r: paper_table(r.two_stage, value) if not r.two_stage.empty else EMPTY


def _last_loss(r: ReportRuns) -> pd.DataFrame:
    return loss_table(r.two_stage[r.two_stage["d_b"].map(db_group) == "non-factoid"])


def _paired_by_seed(r: ReportRuns) -> pd.DataFrame:
    if r.paired.empty:
        return EMPTY
    table = per_seed_table(r.runs)
    return table if table.index.get_level_values("seed").nunique() > 1 else EMPTY


def _paper_vs_ours(r: ReportRuns) -> pd.DataFrame:
    return r.versus.set_index(["D_A", "D_B", "strategy"]) if not r.versus.empty else EMPTY


REGISTRY: tuple[Table, ...] = (
    Table("regime_map", MAP_TITLE,
          lambda r: map_table(r.regime) if not r.regime.empty else EMPTY),
    Table("regime_contrast", CONTRAST_TITLE, lambda r: r.contrast),
    Table("da_after_stage2", "D_A exact match after stage 2 (%)", _if_two_stage("da_final")),
    Table("db_after_stage2", "D_B exact match after stage 2 (%)", _if_two_stage("db_final")),
    Table("da_after_stage1", "D_A exact match after stage 1 (%)", _if_two_stage("da_first")),
    Table("da_by_stage", "D_A exact match after each stage, runs of 3+ stages (%)",
          lambda r: stage_table(r.multi_stage) if not r.multi_stage.empty else EMPTY),
    Table("last_loss", LOSS_TITLE, _last_loss),
    Table("summary", "Continual-learning summary over the scored sets (%)",
          lambda r: summary_table(r.runs)),
    Table("paired", "D_A after the last stage: each strategy minus No Mixing, fact by fact",
          lambda r: r.paired),
    Table("paired_by_seed", "The same, seed by seed (D_A after the last stage, %)",
          _paired_by_seed),
    Table("paired_controls", CONTROLS_TITLE, lambda r: controls_table(r.runs, r.controls)),
    Table("d_b_contrast", D_B_TITLE,
          lambda r: d_b_table(r.two_stage, r.published, r.d_b_pairs)),
    Table("fact_status", STATUS_TITLE, lambda r: status_table(r.runs)),
    Table("curves", CURVE_TITLE, lambda r: curve_table(r.runs)),
    Table("replay", "Replay: D_A after the last stage, replayed facts apart from the rest",
          lambda r: replay_table(r.runs)),
    Table("paper_vs_ours", "Paper vs ours: D_A after stage 2 (%)", _paper_vs_ours),
)  # fmt: skip

TABLES = {table.title: table.stem for table in REGISTRY}  # title -> stem


def table_title(stem: str) -> str:
    """A table's title by its stable name."""
    return next(table.title for table in REGISTRY if table.stem == stem)


def build_tables(source: ReportRuns) -> dict[str, pd.DataFrame]:
    """{title: table} of every registered table these runs have data for, in page order."""
    built = ((table.title, table.build(source)) for table in REGISTRY)
    return {title: table for title, table in built if not table.empty}
