"""Rebuild every committed report under docs/results from the archive, each by the command
its report.md names (a report may set another grid beside its own, e.g. a second regime);
a grid without a report yet gets `factmem report docs/results/GRID --paper remix`. Then
copy the tables into the docs with scripts/fill_docs_tables.py. Run from the repository:

    .venv/bin/python scripts/rebuild_reports.py && .venv/bin/python scripts/fill_docs_tables.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from factmem.cli import main as factmem
from factmem.report import made_by

RESULTS = Path("docs/results")


def main() -> int:
    for grid in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        report = grid / "report"
        args = made_by(report) if (report / "report.md").is_file() else [str(grid), "--paper",
                                                                          "remix"]  # fmt: skip
        print("factmem report", " ".join(args), flush=True)
        if factmem(["report", *args]) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
