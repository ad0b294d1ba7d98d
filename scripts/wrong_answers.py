"""What the lost D_A answers look like after the last stage: how many are a single
lower-case word ("in", "to", "thr") rather than a wrong name. Needs the runs themselves
(archives keep verdicts, not the answers' text, since they quote the datasets).

    .venv/bin/python scripts/wrong_answers.py runs/cells-popqa
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from factmem.layout import runs_under
from factmem.markdown import markdown_table
from factmem.records import RunResults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a grid's runs folder")
    args = parser.parse_args()
    rows = []
    for run in runs_under(args.runs, 2):
        results = RunResults.read(run.results)
        if not results.finished:
            continue
        first = results.accuracy_matrix["columns"][0]
        file = run.stage(len(results.stages)).predictions(first)
        answers = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        wrong = [a["output"].strip() for a in answers if not a["correct"]]
        one_word = [w for w in wrong if len(w.split()) == 1 and w.islower()]
        common = ", ".join(f"{w} x{n}" for w, n in Counter(one_word).most_common(4))
        rows.append([run.path.name, f"{len(answers) - len(wrong)}/{len(answers)}",
                     str(len(wrong)), str(len(one_word)), common])  # fmt: skip
    print(markdown_table(["run", "D_A kept", "lost", "lost as one lower-case word",
                          "most frequent"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
