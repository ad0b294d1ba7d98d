"""Each committed report is what the committed archive gives (docs/remix-135m.md's numbers):
docs/results/<grid>/report was made by the command its report.md names (`factmem report
docs/results/<grid> [other archived grids] --paper remix`), run from the repository."""

from pathlib import Path

import pytest

from factmem.report import made_by, write_report

REPOSITORY = Path(__file__).parents[1]
REPORTS = sorted(p.parent.relative_to(REPOSITORY)
                 for p in (REPOSITORY / "docs" / "results").glob("*/report/report.md"))  # fmt: skip


def sources(report: Path) -> tuple[list[Path], list[str]]:
    """The archived grids a committed report was made from, as its report.md says: its own
    grid first, then any set beside it (e.g. another regime's cells); and its controls
    (`--versus`)."""
    words = made_by(report)
    assert words[-2:] == ["--paper", "remix"] or "--paper remix" in " ".join(words), words
    grids, versus = [], []
    while words:
        word = words.pop(0)
        if word == "--versus":
            versus.append(words.pop(0))
        elif word == "--paper":
            assert words.pop(0) == "remix", report  # the documented command
        else:
            grids.append(Path(word))
    return grids, versus


@pytest.mark.skipif(not REPORTS, reason="no committed report under docs/results")
@pytest.mark.parametrize("report", REPORTS, ids=str)
def test_the_committed_report_is_rebuilt_from_the_committed_archive(report, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.chdir(REPOSITORY)  # the documented command runs from the repository
    grids, versus = sources(report)
    assert grids[0] == report.parent, "a report lives in the folder of its first grid"
    write_report(grids, tmp_path / "report", paper="remix", versus=versus)
    committed = sorted(p.name for p in (REPOSITORY / report).glob("*.csv"))
    assert committed, report
    assert committed == sorted(p.name for p in (tmp_path / "report").glob("*.csv"))
    for name in committed:
        rebuilt = (tmp_path / "report" / name).read_text()
        assert rebuilt == (REPOSITORY / report / name).read_text(), (report, name)


def test_the_docs_tables_are_the_committed_reports_tables(tmp_path, monkeypatch):
    """README.md and docs/remix-135m.md show the reports' tables as
    scripts/fill_docs_tables.py copies them: nothing typed or left stale by hand."""
    import importlib.util
    import shutil

    script = REPOSITORY / "scripts" / "fill_docs_tables.py"
    spec = importlib.util.spec_from_file_location("fill_docs_tables", script)
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    (tmp_path / "docs").mkdir()
    for name in ("README.md", "docs/remix-135m.md"):
        shutil.copy(REPOSITORY / name, tmp_path / name)
    (tmp_path / "docs" / "results").symlink_to(REPOSITORY / "docs" / "results")
    monkeypatch.setattr(fill, "ROOT", tmp_path)
    fill.main()
    for name in ("README.md", "docs/remix-135m.md"):
        assert (tmp_path / name).read_text() == (REPOSITORY / name).read_text(), name
