"""The committed report is what the committed archive gives (docs/remix-135m.md's numbers)."""

from pathlib import Path

import pytest

from factmem.report import write_report

ARCHIVE = Path(__file__).parents[1] / "docs" / "results"


@pytest.mark.skipif(not (ARCHIVE / "report" / "report.md").is_file(),
                    reason="no committed report under docs/results")  # fmt: skip
def test_the_committed_report_is_rebuilt_from_the_committed_archive(tmp_path, monkeypatch):
    monkeypatch.chdir(ARCHIVE.parents[1])  # the README's command runs from the repository
    write_report(Path("docs/results"), tmp_path / "report", paper="remix")
    committed = sorted(p.name for p in (ARCHIVE / "report").glob("*.csv"))
    assert committed == sorted(p.name for p in (tmp_path / "report").glob("*.csv"))
    for name in committed:
        rebuilt = (tmp_path / "report" / name).read_text()
        assert rebuilt == (ARCHIVE / "report" / name).read_text(), name
