"""`factmem report RUNS_DIR`: finished runs -> the paper's tables and figures.

One row per run is read from `<run>/results.json` and `<run>/config.yaml`; seeds are
aggregated (mean, sample standard deviation, n) into tables laid out like the paper's:
rows D_A x strategy, columns D_B, with per-group averages (factoid and non-factoid D_B).
Written as markdown, CSV and LaTeX (pandas), PNG figures (matplotlib) and one
self-contained HTML page that embeds them all.

Rooms, each with one job, in the order they depend on each other:
  rows     runs -> one row each (config, results, predictions)
  paired   each strategy against its No Mixing twin; the paper's numbers beside ours
  regimes  the same cells under several regimes side by side: hold, vanish, flip, appear
  tables   the tables
  registry every table in page order: stable file name, title, builder (TABLES)
  figures  the figures
  page     write_report: the files and the HTML page
"""

from factmem.report.figures import (  # noqa: F401
    FOREST_TITLE,
    figures,
    save_figure,
)
from factmem.report.page import (  # noqa: F401
    GLOSSARY,
    all_hundred,
    html_page,
    made_by,
    summary_items,
    write_report,
)
from factmem.report.paired import (  # noqa: F401
    BASELINE,
    PAPER_BASELINES,
    PAPER_FILES,
    d_b_forest_rows,
    d_b_rows,
    forest_rows,
    load_paper_numbers,
    paired_rows,
    paper_d_b_difference,
    paper_numbers_path,
    paper_vs_ours,
    twins,
)
from factmem.report.regimes import (  # noqa: F401
    CONTRAST_TITLE,
    movement,
    regime_contrast,
    regime_forest_rows,
    regimes_setting_text,
    scored_regimes,
    split_regimes,
)
from factmem.report.registry import (  # noqa: F401
    REGISTRY,
    TABLES,
    ReportRuns,
    Table,
    build_tables,
    table_title,
)
from factmem.report.rows import (  # noqa: F401
    METRICS,
    NOT_STRATEGY_TAGS,
    collect_runs,
    continual_metrics,
    db_group,
    distinct_values,
    earlier_stages,
    final_predictions,
    model_titles,
    ordered_pairs,
    regime_text,
    row_label,
    row_labels,
    run_row,
    separate_regimes,
    setting_text,
    status_counts,
    strategy_label,
    trained_apart,
)
from factmem.report.tables import (  # noqa: F401
    CONTROLS_TITLE,
    CURVE_EPOCHS,
    CURVE_TITLE,
    D_B_TITLE,
    LOSS_TITLE,
    STATUS_TITLE,
    aggregate,
    cell_text,
    controls_table,
    curve_points,
    curve_table,
    d_b_table,
    kept_text,
    loss_table,
    paired_table,
    paper_table,
    per_seed_table,
    replay_table,
    stage_table,
    status_table,
    summary_table,
    to_latex,
    to_markdown,
)
