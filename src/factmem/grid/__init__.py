"""Experiment grids: one base config and axes to sweep, each stage trained once, resumable.

A grid file (`factmem grid GRID.yaml`):

    name: remix-table             # runs go to <output_dir>/<name>/<run name>/
    base: default                 # a preset or config file every run starts from
    set:                          # overrides for every run: {field path: value}
      stages[0].size: 16
    axes:                         # the grid is the cartesian product of its axes
      strategy:                   # a labelled axis: {label: {field path: value, ...}}
        No Mixing: {}
        Random/-: {stages[0].mixing: {source: random_words}}
      stages[1].dataset: [kvr_id, lama]   # a plain axis: a field path and its values
      seed: [0, 1, 2]
    vars: {size: 16}              # `{size}` anywhere in a value is replaced by 16
                                  # (a labelled value may set its own: `kvr: {vars: {d_a: kvr}}`,
                                  # e.g. so that `stages.1.dataset: "{d_a}_id"` follows D_A)
    profiles:                     # named sets of vars, chosen with --profile NAME
      paper: {size: 2000}

`{data_dir}` is a var too: `--data-dir DIR` (or FACTMEM_DATA_DIR) sets it, so presets can
name local copies of the datasets; without it a value that uses it becomes null, i.e. a
`path` falls back to the Hugging Face hub.

Each run's `tags` get one entry per axis (its label, or its value), which `factmem report`
groups by. Runs whose stages 1..k have the same fingerprint share stage k's checkpoint:
the first run (in grid order) trains it, the others link to it.

Scheduling is stage by stage: a stage job waits for its run's previous stage and, when it
reuses another run's stage, for that stage. The local backend runs the jobs in order in
this process; `ray` submits each job as a Ray task with the same dependencies.

Rooms: plan.py (the file read and expanded into runs and stage jobs), status.py (where a
grid stands; the plan and the data paths checked before running), run.py (local or Ray).
"""

from factmem.grid.plan import (  # noqa: F401
    Grid,
    GridError,
    GridRun,
    StageJob,
    load_grid,
    stage_finished,
)
from factmem.grid.run import run_grid, run_local, run_ray, run_stage_job  # noqa: F401
from factmem.grid.status import (  # noqa: F401
    archived,
    check_data_paths,
    describe_plan,
    dry_run_listing,
    run_state,
    status_table,
    write_plan,
)
