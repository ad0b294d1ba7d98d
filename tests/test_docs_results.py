"""Each committed report is what the committed archive gives (docs/remix-135m.md's numbers):
docs/results/<grid>/report was made by `factmem report docs/results/<grid> --paper remix
--out docs/results/<grid>/report`, run from the repository."""

from pathlib import Path

import pytest

from factmem.report import write_report

REPOSITORY = Path(__file__).parents[1]
REPORTS = sorted(p.parent.relative_to(REPOSITORY)
                 for p in (REPOSITORY / "docs" / "results").glob("*/report/report.md"))  # fmt: skip


@pytest.mark.skipif(not REPORTS, reason="no committed report under docs/results")
@pytest.mark.parametrize("report", REPORTS, ids=str)
def test_the_committed_report_is_rebuilt_from_the_committed_archive(report, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.chdir(REPOSITORY)  # the documented command runs from the repository
    write_report(report.parent, tmp_path / "report", paper="remix")
    committed = sorted(p.name for p in (REPOSITORY / report).glob("*.csv"))
    assert committed, report
    assert committed == sorted(p.name for p in (tmp_path / "report").glob("*.csv"))
    for name in committed:
        rebuilt = (tmp_path / "report" / name).read_text()
        assert rebuilt == (REPOSITORY / report / name).read_text(), (report, name)
