"""The run folder: every path and file name of a run, built here and nowhere else, and the
file mechanics of a stage folder (forgetting a damaged stage, taking a shared one).

    <output_dir>/                      a runs root or a grid folder
      .locks/<fingerprint>.lock        one process at a time per stage (pipeline)
      grid.json  run.log               a grid's record of its runs, and its log
      <run>/                           RunFolder
        config.yaml                    the resolved config
        results.json                   one record per finished stage + the accuracy matrix
        run.log                        what happened
        grid-state.json                running / failed / between stages (grid runs)
        stage<k>/                      StageFolder, k = 1, 2, ... as in logs and results.json
          fingerprint                  hash of what determines the stage
          data.jsonl                   the exact examples the stage trained on
          trainer/                     trainer checkpoints, removed once the model is saved
            progress.json              where training is, for `factmem grid --status`
          model/  adapter/             the stage's checkpoint (and LoRA adapter)
          training.json                how training went; written after model/
          predictions/<set>.jsonl      per-example outputs and verdicts
          stage.json                   written last: its presence means the stage is finished
          lens_<set>.json  gradients.json   analysis caches

Stage numbers are 1-based here, as users read them; configs index stages from 0.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from factmem.atomic import write_dir_atomic, write_text_atomic


@dataclass(frozen=True)
class StageFolder:
    """One stage's folder inside a run."""

    path: Path

    @property
    def number(self) -> int:
        return int(self.path.name.removeprefix("stage"))

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.path.parent)

    @property
    def fingerprint(self) -> Path:
        return self.path / "fingerprint"

    @property
    def data(self) -> Path:
        return self.path / "data.jsonl"

    @property
    def trainer(self) -> Path:
        return self.path / "trainer"

    @property
    def progress(self) -> Path:
        return self.trainer / "progress.json"

    def last_checkpoint_step(self) -> int | None:
        """The step of the newest trainer checkpoint (a resume starts there), if any."""
        steps = [int(c.name.removeprefix("checkpoint-")) for c in self.trainer.glob("checkpoint-*")
                 if c.name.removeprefix("checkpoint-").isdigit()]  # fmt: skip
        return max(steps, default=None)

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def training(self) -> Path:
        return self.path / "training.json"

    @property
    def record(self) -> Path:
        return self.path / "stage.json"

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def predictions(self, set_name: str) -> Path:
        return self.predictions_dir / f"{set_name}.jsonl"

    def lens(self, set_name: str) -> Path:
        return self.path / f"lens_{set_name}.json"

    @property
    def gradients(self) -> Path:
        return self.path / "gradients.json"

    def recorded_fingerprint(self) -> str | None:
        """The fingerprint written when the stage was started, if any."""
        return self.fingerprint.read_text().strip() if self.fingerprint.is_file() else None

    def is_finished_by(self, fingerprint: str) -> bool:
        """Finished (its record written last) by the config with this fingerprint."""
        return self.record.is_file() and self.recorded_fingerprint() == fingerprint

    def origin(self) -> StageFolder:
        """Where the stage was trained: itself, or the sibling run it was shared from (so
        files cached beside a checkpoint, such as EWC's Fisher, are found by every run
        sharing it)."""
        if self.training.is_file():
            shared = json.loads(self.training.read_text()).get("shared_from")
            if shared and Path(shared).is_dir():
                return StageFolder(Path(shared))
        return self

    def forget(self) -> None:
        """Remove the stage's results (records, model, predictions) so that it is redone; its
        fingerprint and resumable checkpoints stay. The model goes link by link: a shared
        stage's files are hard links, and the run it was shared from checks its own copy
        when it next reuses it."""
        for record in (self.record, self.training):
            record.unlink(missing_ok=True)
        shutil.rmtree(self.model, ignore_errors=True)
        shutil.rmtree(self.predictions_dir, ignore_errors=True)

    def take_shared(self, source: StageFolder) -> None:
        """Take a finished stage of the same fingerprint from another run: its model as hard
        links (copies across file systems), its training set, its fingerprint and its
        training record, which names where the stage was trained."""
        from factmem.records import StageOutcome  # records import nothing of the layout

        def link_or_copy(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        def fill(tmp: Path) -> None:
            shutil.copytree(source.model, tmp, dirs_exist_ok=True, copy_function=link_or_copy)

        write_dir_atomic(self.model, fill)
        shutil.rmtree(self.trainer, ignore_errors=True)  # an interrupted own attempt
        shutil.copy2(source.data, self.data)
        outcome = StageOutcome.read(source.training)
        outcome.shared_from = outcome.shared_from or str(source.path)  # where it was trained
        outcome.write(self.training)
        write_text_atomic(self.fingerprint, source.fingerprint.read_text())


@dataclass(frozen=True)
class RunFolder:
    """One run's folder: `<output_dir>/<name>`."""

    path: Path

    @classmethod
    def of(cls, output_dir: str | Path, name: str) -> RunFolder:
        return cls(Path(output_dir) / name)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def log(self) -> Path:
        return self.path / "run.log"

    @property
    def grid_state(self) -> Path:
        return self.path / "grid-state.json"

    def stage(self, number: int) -> StageFolder:
        """Stage `number` (1-based)."""
        return StageFolder(self.path / f"stage{number}")

    def stages(self) -> list[StageFolder]:
        """The stage folders present, in order."""
        found = [StageFolder(p) for p in self.path.glob("stage*")
                 if p.is_dir() and p.name.removeprefix("stage").isdigit()]  # fmt: skip
        return sorted(found, key=lambda s: s.number)

    def lock(self, fingerprint: str) -> Path:
        """The lock of a stage fingerprint, shared by every run of the same root."""
        return self.path.parent / ".locks" / f"{fingerprint}.lock"

    def sharing_candidates(self, number: int) -> list[StageFolder]:
        """Stage `number` of the sibling runs (same output folder), then of the runs of
        sibling grids (grids under one root share): where an identical stage may be found."""
        root, name = self.path.parent, f"stage{number}"
        siblings = sorted(root.glob(f"*/{name}"))
        cousins = sorted(p for p in root.parent.glob(f"*/*/{name}") if p.parent.parent != root)
        return [StageFolder(p) for p in siblings + cousins
                if p.resolve() != (self.path / name).resolve()]  # fmt: skip


def runs_under(root: Path, depth: int) -> list[RunFolder]:
    """The run folders (with a results.json) up to `depth` levels below `root`."""
    patterns = ["/".join(["*"] * level) + "/results.json" for level in range(1, depth + 1)]
    found = {RunFolder(p.parent) for pattern in patterns for p in root.glob(pattern)}
    return sorted(found, key=lambda r: r.results)


def grid_record(grid_dir: Path) -> Path:
    """A grid folder's record of its runs and options."""
    return grid_dir / "grid.json"


def grid_log(grid_dir: Path) -> Path:
    """A grid folder's log (every run's lines, interleaved); each run also keeps its own."""
    return grid_dir / "run.log"
