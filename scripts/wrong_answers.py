"""What the lost D_A answers look like after the last stage: do they begin like a passage
continuation (a lower-case word such as "in", "to") rather than like a wrong name?

Runs scored since 2026-12-05 hold the whole answers in their predictions (fact scores
generate a wrong answer on, past exact match's early stop, up to 128 tokens), and those are
read as they are. Older runs hold only the first token or two of a lost answer: for them the
script asks the run's final model again, greedy and without the early stop (up to
`--max-new-tokens`). Needs the runs themselves (archives keep verdicts, not the answers'
text, since they quote the datasets), and for older runs their models.

    .venv/bin/python scripts/wrong_answers.py runs/cells-popqa
    .venv/bin/python scripts/wrong_answers.py runs/cells-popqa/seed2_popqa_entityquestions_*
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from factmem.analysis import stage_model
from factmem.evaluation import greedy_generate
from factmem.layout import RunFolder, runs_under
from factmem.markdown import markdown_table
from factmem.models import load_model, load_tokenizer
from factmem.records import RunResults


def whole_answers(run_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The final model's greedy answers, generated to EOS or the cap (no early stop)."""
    _, model_dir = stage_model(run_dir, None)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, tokenizer)
    return greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                           progress=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders or a grid's folder")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    rows = []
    runs = [r for path in args.runs
            for r in ([RunFolder(path)] if RunFolder(path).results.is_file()
                      else runs_under(path, 2))]  # fmt: skip
    for run in runs:
        results = RunResults.read(run.results)
        if not results.finished:
            continue
        first = results.accuracy_matrix["columns"][0]
        file = run.stage(len(results.stages)).predictions(first)
        scored = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        lost = [s for s in scored if not s["correct"]]
        if all(not s.get("output_cut") or s.get("contains") for s in lost):
            answers = [s["output"] for s in lost]  # whole (or cut where the gold appeared)
        else:  # scored before fact scores generated wrong answers on: ask the model again
            answers = whole_answers(run.path, [s["prompt"] for s in lost], args.max_new_tokens)
        first_words = [a.split()[0] if a.split() else "" for a in answers]
        lower = [w for w in first_words if w.islower()]
        common = ", ".join(f"{w} x{n}" for w, n in Counter(lower).most_common(3))
        example = next((a for a, w in zip(answers, first_words, strict=True) if w.islower()), "")
        rows.append([run.path.name, f"{len(scored) - len(lost)}/{len(scored)}",
                     str(len(lost)), str(len(lower)), common,
                     json.dumps(example[:60], ensure_ascii=False) if example else ""])  # fmt: skip
    print(markdown_table(["run", "D_A kept", "lost", "lost, beginning lower-case",
                          "most frequent first words", "e.g. (whole answer, 60 chars)"],
                         rows))  # fmt: skip


if __name__ == "__main__":
    main()
