"""`factmem report RUNS_DIR`: the tables and figures written out, and one self-contained HTML
page that embeds them all."""

from __future__ import annotations

import base64
import html
import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from factmem.atomic import write_text_atomic
from factmem.embedded import EMBEDDED
from factmem.errors import FactmemError
from factmem.regime_map import HEAT_TITLE, chosen_text, heat_map
from factmem.report.figures import FOREST_TITLE, figures, forest_plot
from factmem.report.paired import (
    d_b_forest_rows,
    forest_rows,
    load_paper_numbers,
    paper_numbers_path,
)
from factmem.report.regimes import regime_forest_rows, regimes_setting_text
from factmem.report.registry import TABLES, ReportRuns, build_tables
from factmem.report.rows import collect_runs, distinct_values, model_titles, setting_text
from factmem.report.tables import aggregate, to_latex, to_markdown

log = logging.getLogger(__name__)


GLOSSARY = {
    "exact match": "the greedy answer, stripped and lower-cased, equals a gold answer (the "
    "paper's rule; WebQuestions: a gold answer inside the output). D_A after stage 2 is the "
    "retention the paper reports.",
    "mean ± std, n": "over seeds: the mean and the sample standard deviation of n seeds.",
    "Δ vs No Mixing": "a strategy's D_A exact match minus that of its No Mixing twin (same "
    "D_A facts, D_B and seed), in points, fact by fact.",
    "Δ vs control": "`--versus`: the same, against another strategy's twin (a control) "
    "instead of No Mixing's; kept only with / without then count against the control.",
    "non-factoid - factoid D_B": "D_A after a non-factoid D_B minus D_A after a factoid D_B, "
    "same strategy and seed (one stage-1 model, the same facts), fact by fact: the paper's "
    "Table 1 finds factoid D_B forgets more on average (not in every cell). A verdict adds "
    "'but D_B not learned' where the non-factoid D_B's last-epoch loss is not below 0.05.",
    "95% interval": "bootstrap over facts, resampled within each seed (10,000 resamples).",
    "seeds resampled": "hierarchical bootstrap: seeds first, then facts within each drawn "
    "seed; wider when seeds disagree.",
    "kept only with / without": "facts the strategy keeps and No Mixing loses / facts No "
    "Mixing keeps and the strategy loses (McNemar's discordant pairs).",
    "p (McNemar)": "McNemar's exact two-sided test on those discordant pairs.",
    "verdict": "higher or lower only when p < 0.05 and both 95% intervals exclude 0, else not "
    "established; against the paper: agrees when our established direction is the sign of "
    "the paper's Δ, disagrees when it is the opposite.",
    "kept / hidden / lost": "after the last stage: kept = exact match; hidden = not exact, but "
    "the gold is inside the output or its first token ranks 1 under teacher forcing; lost = "
    "neither.",
    "BWT, forgetting": "backward transfer: mean over earlier sets of (accuracy after the last "
    "stage - accuracy right after learning it); forgetting: mean drop from each set's best "
    "accuracy (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).",
}  # fmt: skip


def summary_items(runs: pd.DataFrame) -> dict[str, str]:
    """What was run, in words: the first thing on the page."""
    def values(column: str) -> str:
        return distinct_values(runs, column)

    models = values("model")
    steps = [s for s in runs["steps_by_stage"] if s]
    per_stage = []
    for i in range(max((len(s) for s in steps), default=0)):
        counts = sorted({s[i] for s in steps if len(s) > i})
        shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        per_stage.append(f"stage {i + 1}: {shown}")
    return {
        "model": model_titles(models)
        + (" (not the paper's Llama-3-8B base model)" if any(name in models for name in EMBEDDED)
           else ""),
        "runs": f"{len(runs)} finished; seeds {values('seed')}",
        "cells": "; ".join(dict.fromkeys(f"{a} -> {b}" for a, b in zip(runs["d_a"], runs["d_b"],
                                                                       strict=True))),
        "strategies": values("strategy"),
        "D_A facts per stage": values("facts"),
        "learning rate": values("learning_rate"),
        "optimizer steps": "; ".join(per_stage) or "?",
    }  # fmt: skip


def all_hundred(table: pd.DataFrame) -> bool:
    """Every value cell reads 100 (e.g. D_A after stage 1, D_B): folded on the page."""
    cells = [str(v) for v in table.to_numpy().ravel() if str(v) not in ("", "-", "nan")]
    return bool(cells) and all(c.split(" ")[0] in ("100.0", "100") for c in cells)


def write_report(runs_dirs: Path | list[Path], out: Path | None = None,
                 paper: str | Path | None = None, versus: Sequence[str] = ()) -> Path:  # fmt: skip
    """Tables (md, csv, tex), figures (png) and report.html under `out`; returns the page.

    `runs_dirs`: runs folders and/or archives; `paper`: `remix` or a YAML of published cells;
    `versus`: strategies (controls) to pair every other strategy against, beside No Mixing."""
    dirs = [runs_dirs] if isinstance(runs_dirs, Path) else list(runs_dirs)
    out = out or dirs[0] / "report"
    runs = collect_runs(dirs)
    found_twice = runs.attrs.get("found_twice", [])
    strategies = set(runs["strategy"])
    for control in versus:
        if control not in strategies:
            raise FactmemError(f"--versus {control!r}: no run of that strategy here (they are: "
                               f"{', '.join(sorted(strategies))})")  # fmt: skip
    published = load_paper_numbers(paper_numbers_path(paper)) if paper is not None else None
    source = ReportRuns(runs, published, tuple(versus))
    tables = build_tables(source)
    lead: dict[str, Path] = {}  # the answer, shown before every table
    if not source.regime.empty:  # a regime-map grid: the map is its answer
        lead[HEAT_TITLE] = heat_map(source.regime, out / "regime_map.png")
    setting = setting_text(source.two_stage)
    if source.published is not None and not source.contrast.empty:  # regimes side by side
        forest = regime_forest_rows(source.two_stage, source.published, source.by_regime)
        setting = regimes_setting_text(source.two_stage)
    elif not source.versus.empty:
        forest = forest_rows(source.versus, source.plain_pairs)
        across = d_b_forest_rows(source.two_stage, source.published, source.d_b_pairs)
        if not across.empty:  # the paper's Table 1 claim, below its strategy cells
            forest = across if forest.empty else pd.concat([forest, across], ignore_index=True)
    else:
        forest = None
        if paper is not None:
            log.warning("--paper %s: none of these runs' cells is in the paper's tables", paper)
    if forest is not None and not forest.empty:  # the paper's cells: the answer is the forest
        import matplotlib

        matplotlib.use("Agg")
        lead[FOREST_TITLE] = forest_plot(forest, setting, out / "paper_vs_ours.png")
    command = " ".join(["factmem report", *map(str, dirs)]
                       + ([f"--out {out}"] if out != dirs[0] / "report" else [])
                       + ([f"--paper {paper}"] if paper is not None else [])
                       + [f"--versus {shlex.quote(c)}" for c in versus])  # fmt: skip
    name = ", ".join(dict.fromkeys(d.resolve().name for d in dirs))
    made_by = f"{len(runs)} finished runs ({setting_text(runs)}). Made by `{command}`."
    summary = summary_items(runs)
    if not source.regime.empty:  # a regime map: the rule's choice, or that none is usable
        summary["points the map's rule chooses"] = chosen_text(source.regime)
    if found_twice:  # the same config trained twice, unlike: say which copy the tables read
        summary["runs found twice, with other results"] = "; ".join(found_twice)
    markdown = [f"# factmem report: {name}\n", made_by + "\n", "## What was run\n"]
    markdown += [f"- **{k}**: {v}" for k, v in summary.items()] + [""]
    markdown += [f"![{title}]({path.name})\n" for title, path in lead.items()]
    _remove_stale_tables(out, {TABLES[title] for title in tables})
    for title, table in tables.items():
        stem = TABLES[title]  # a table without a registered name is a bug: fail loudly
        write_text_atomic(out / f"{stem}.csv", table.reset_index().to_csv(index=False))
        write_text_atomic(out / f"{stem}.tex", to_latex(table, title))
        markdown += [f"## {title}\n", to_markdown(table), ""]
    write_text_atomic(out / "cells.csv", aggregate(runs).to_csv(index=False))
    write_text_atomic(out / "runs.csv",
                      runs.drop(columns=["earlier_stages", "last_loss"]).to_csv(index=False))
    figs = figures(runs, out)
    markdown += [f"![{title}]({path.name})\n" for title, path in figs.items()]
    markdown += ["## Glossary\n"] + [f"- **{k}**: {v}" for k, v in GLOSSARY.items()]
    write_text_atomic(out / "report.md", "\n".join(markdown) + "\n")
    page = out / "report.html"
    write_text_atomic(page, html_page(f"factmem report: {name}", made_by, tables, figs, lead,
                                      summary))  # fmt: skip
    return page


def made_by(report_dir: Path) -> list[str]:
    """The `factmem report` arguments a written report says it was made with (its "Made by"
    line): what rebuilds it, e.g. a report that sets two grids side by side."""
    page = report_dir / "report.md"
    text = page.read_text() if page.is_file() else ""
    found = re.search(r"Made by `factmem report ([^`]*)`", text)
    if not found:
        raise FactmemError(f"{page}: no 'Made by `factmem report ...`' line")
    return shlex.split(found.group(1))


def _remove_stale_tables(out: Path, written: set[str]) -> None:
    """Tables an earlier report of this folder wrote and this one does not (or wrote under
    their old numbered names, table<i>): left in place they would read as current."""
    if not out.is_dir():
        return
    for file in [*out.glob("*.csv"), *out.glob("*.tex")]:
        ours = file.stem in TABLES.values() or re.fullmatch(r"table\d+", file.stem)
        if ours and file.stem not in written:
            file.unlink()


def _img(title: str, path: Path, lead: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mark = " data-lead" if lead else ""
    return (f"<img data-figure{mark} alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{data}'>")


def html_page(title: str, made_by: str, tables: dict[str, pd.DataFrame],
              figs: dict[str, Path], lead: dict[str, Path] | None = None,
              summary: dict[str, str] | None = None) -> str:  # fmt: skip
    """One file, figures embedded as data URIs: what was run, the `lead` figures (the
    answer), the tables (folded where every cell is 100), the other figures, a glossary. On
    load it counts what rendered, and whether the first lead figure starts on the first
    screen (for tests)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}",
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}",
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}",
        "td:nth-child(-n+2){text-align:left}img{max-width:100%;display:block;margin:1em 0}",
        "dl.summary{display:grid;grid-template-columns:max-content auto;gap:2px 12px;"
        "font-size:14px;margin:0.5em 0}dl.summary dt{font-weight:bold}dl.summary dd{margin:0}"
        "details>summary{cursor:pointer;font-size:1.2em;font-weight:bold;margin:1em 0}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append("<dl class='summary'>" + "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in summary.items())
            + "</dl>")  # fmt: skip
    for title_text, path in (lead or {}).items():
        parts += [f"<h2>{html.escape(title_text)}</h2>", _img(title_text, path, lead=True)]
    parts.append(f"<p>{html.escape(made_by)} Mean ± sample standard deviation over seeds, "
                 "n = 3 unless shown; the glossary at the end says what each column means.</p>")
    for title_text, table in tables.items():
        flat = table.reset_index()
        flat.columns.name = None
        body = flat.to_html(index=False, border=0)
        body = body.replace("<table", f"<table data-table='{html.escape(title_text)}'", 1)
        if all_hundred(table):  # nothing to read but 100s: one line, open on a click
            parts.append(f"<details data-folded><summary>{html.escape(title_text)}: every cell "
                         f"100 (click to show)</summary>{body}</details>")
        else:
            parts += [f"<h2>{html.escape(title_text)}</h2>", body]
    for title_text, path in figs.items():
        parts += [f"<h2>{html.escape(title_text)}</h2>", _img(title_text, path)]
    parts.append("<h2>Glossary</h2><dl class='summary'>" + "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GLOSSARY.items())
        + "</dl>")  # fmt: skip
    parts.append(
        "<script>window.addEventListener('load', () => {"
        "const imgs = [...document.querySelectorAll('img[data-figure]')];"
        "document.body.dataset.figures = imgs.length;"
        "document.body.dataset.figuresLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0)"
        ".length;"
        "document.body.dataset.tables = document.querySelectorAll('table[data-table]').length;"
        "document.body.dataset.folded = document.querySelectorAll('details[data-folded]').length;"
        "const lead = document.querySelector('img[data-lead]');"
        "if (lead) document.body.dataset.leadOnFirstScreen ="
        " lead.getBoundingClientRect().top < window.innerHeight ? 1 : 0;"
        "});</script></body></html>"
    )
    return "\n".join(parts)
