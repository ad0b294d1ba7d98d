"""`factmem run | grid | report | archive | lens | gradients | filter | ...`: the commands."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

from factmem.errors import FactmemError
from factmem.layout import RunFolder, grid_log


def _setup_logging(log_file: Path | None, quiet: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )
    for noisy in ("transformers", "accelerate", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


DESCRIPTION = """\
Continual memorization of factoids in language models, as in the REMIX paper (Chen et al.):
stage 1 fine-tunes a causal LM until it has memorised a set of factoids D_A, stage 2 (and
3, ...) fine-tunes it on another set D_B, and every earlier stage's set is scored by exact
match after each stage: what is kept of D_A is the retention. REMIX mixes random words or
generic text into the stages to reduce the forgetting. One YAML file (or a preset in
configs/) describes an experiment: `factmem run` trains and scores it, `factmem grid` runs
many (the paper's tables), `factmem report` turns finished runs into tables and figures.
Every run resumes where it was stopped."""


def _version() -> str:
    """The installed distribution's version; a source tree on PYTHONPATH has only the module's."""
    try:
        return importlib.metadata.version("factmem")
    except importlib.metadata.PackageNotFoundError:
        from factmem import __version__

        return __version__


def cmd_run(args: argparse.Namespace) -> None:
    # the config first, with light imports: a mistyped preset is refused before torch loads
    from factmem.config import find_config, load_config

    options = {"name": args.name, "output_dir": args.output_dir}
    config = load_config(find_config(args.config), args.set or [], options)

    from factmem.pipeline import results_table, run_experiment

    run = RunFolder.of(config.output_dir, config.name)
    _setup_logging(run.log, args.quiet)
    results = run_experiment(config, run.path, progress=not args.quiet)
    if results is None:  # a rank > 0 of a multi-process launch: rank 0 reports
        return
    print(f"\n{config.name}: exact match (%) after each stage  [{run.results}]\n")
    print(results_table(results))


def cmd_prepare_model(args: argparse.Namespace) -> None:
    from factmem.models import resolve_model

    _setup_logging(None, False)
    print(resolve_model(args.model))


def cmd_fields(args: argparse.Namespace) -> None:
    from factmem.config import describe_fields

    print(describe_fields())


def cmd_datasets(args: argparse.Namespace) -> None:
    from factmem.data.registry import REGISTRY

    for name, spec in REGISTRY.items():
        print(f"{name:16s} {spec.description} [{spec.kind}, match: {spec.match}]")


def cmd_filter(args: argparse.Namespace) -> None:
    from factmem.atomic import write_jsonl_atomic
    from factmem.familiarity import split_by_familiarity

    _setup_logging(None, args.quiet)
    options = {"split": args.split} if args.split else {}
    known, unknown = split_by_familiarity(
        args.model, args.dataset, args.path, options, args.limit, args.seed, progress=not args.quiet
    )
    total = len(known) + len(unknown)
    print(f"{args.dataset}: {len(known)} of {total} facts known by {args.model} "
          f"({100 * len(known) / max(total, 1):.1f}%), {len(unknown)} unfamiliar")  # fmt: skip
    if args.out:
        for name, facts in (("known", known), ("unknown", unknown)):
            rows = ({"prompt": e.prompt, "response": e.response,
                     "answers": list(e.meta.get("aliases", []))} for e in facts)  # fmt: skip
            write_jsonl_atomic(Path(args.out) / f"{name}.jsonl", rows)
        print(f"wrote {args.out}/known.jsonl and unknown.jsonl (dataset: local)")


def cmd_grid(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        raise FactmemError(f"--jobs {args.jobs}: give 1 or more stages to run at once")
    if args.jobs > 1 and args.backend != "local":
        raise FactmemError("--jobs is for the local backend; Ray runs stages side by side "
                           "by --cpus-per-stage")  # fmt: skip
    from factmem.grid import (
        check_data_paths,
        describe_plan,
        dry_run_listing,
        load_grid,
        run_grid,
        status_table,
    )

    grid = load_grid(args.grid, args.set or [], args.profile, args.data_dir, args.only or [])
    archive = Path(args.archive) if args.archive else None
    if args.status:
        print(describe_plan(grid))
        print(status_table(grid, archive))
        return
    if args.dry_run:
        check_data_paths(grid)
        listing, todo = dry_run_listing(grid, archive)
        print(listing)
        if (args.gpu or args.here) and not todo.runs:
            print("\nnothing left to run: every run is archived")
        elif args.gpu:
            from factmem.estimate import grid_estimate

            print("\n" + grid_estimate(todo, args.gpu, args.gpus, args.mfu))
        elif args.here:
            from factmem.estimate import grid_estimate_here

            folders = [grid.directory.parent] + ([archive] if archive else [])
            print("\n" + grid_estimate_here(todo, folders))
        return
    _setup_logging(grid_log(grid.directory), args.quiet)
    run_grid(grid, args.backend, progress=not args.quiet, archive=archive, **(
        {"address": args.address, "cpus": args.cpus_per_stage, "gpus": args.gpus_per_stage}
        if args.backend == "ray" else {"jobs": args.jobs}))  # fmt: skip
    print(status_table(grid, archive))
    print(f"\nreport: factmem report {archive / grid.name if archive else grid.directory}")


def cmd_archive(args: argparse.Namespace) -> None:
    from factmem.archive import archive_runs, record_archive_data

    if args.record_data_from:
        added = record_archive_data([Path(s) for s in args.sources], Path(args.record_data_from))
        print(f"recorded data digests for {added} archived runs (files read from "
              f"{args.record_data_from}/)")  # fmt: skip
        return
    if not args.out:
        raise FactmemError("factmem archive: --out DIR is needed (where the archive goes)")
    made = archive_runs([Path(s) for s in args.sources], Path(args.out), args.with_text)
    print(f"archived {len(made)} finished runs (no weights) in {args.out}/")


def cmd_report(args: argparse.Namespace) -> None:
    from factmem.report import write_report

    _setup_logging(None, True)
    page = write_report([Path(d) for d in args.runs_dirs], Path(args.out) if args.out else None,
                        args.paper, args.versus)  # fmt: skip
    print(f"wrote {page.parent}/ (report.md, report.html, a .csv and .tex per table, *.png)")


def cmd_lens(args: argparse.Namespace) -> None:
    from factmem.analysis import lens_figure, lens_table, run_lens

    _setup_logging(None, True)
    records = [run_lens(Path(run), args.stage, args.set, args.n, args.top_k) for run in args.runs]
    print(lens_table(records))
    out = Path(args.out or Path(args.runs[0]) / "lens")
    print(f"\nfigure: {lens_figure(records, out / 'lens.png')}")


def cmd_gradients(args: argparse.Namespace) -> None:
    from factmem.analysis import gradients_table, run_gradients

    _setup_logging(None, True)
    mix = Path(args.mix_from) if args.mix_from else None
    records = [run_gradients(Path(run), args.stage, args.n, mix) for run in args.runs]
    print(gradients_table(records))
    print("\nper-layer cosines: <run>/stage<k>/gradients.json")


def _add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE`, the same for `run` and `grid` (parsed by config.parse_override)."""
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=help)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (a function, so tests can walk every option)."""
    parser = argparse.ArgumentParser(prog="factmem", description=DESCRIPTION,
                                     epilog="README.md has a quick start and the docs.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"factmem {_version()}",
                        help="print factmem's version and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND",
                                help="`factmem COMMAND --help` lists its options")  # fmt: skip
    for add in (_add_run, _add_grid, _add_setup_commands, _add_analyses, _add_results):
        add(sub)
    return parser


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train and score every stage of a config (resumes)")
    run.add_argument("config", help="a YAML file, or a preset name from configs/ (e.g. default)")
    _add_set_option(run, "override a field, e.g. --set stages[0].size=32 --set seed=1")
    run.add_argument("--name", help="run name (directory under output_dir)")
    run.add_argument("--output-dir", help="where run directories go (default: the config's "
                     "output_dir, runs); runs in it and in folders beside it share finished "
                     "stages with the same fingerprint")  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="warnings only, no progress bars")
    run.set_defaults(func=cmd_run)


def _add_setup_commands(sub: argparse._SubParsersAction) -> None:
    """prepare-model, fields, datasets, filter: what a config can name, before a run."""
    prep = sub.add_parser("prepare-model", help="convert an embedded model once; print its folder")
    prep.add_argument("model", nargs="?", default="smollm2-135m",
                      help="an embedded model: smollm2-135m (default) or gemma3-270m")  # fmt: skip
    prep.set_defaults(func=cmd_prepare_model)
    sub.add_parser("fields", help="every config field with its default").set_defaults(
        func=cmd_fields
    )
    sub.add_parser("datasets", help="dataset names a config can use").set_defaults(
        func=cmd_datasets
    )
    filt = sub.add_parser("filter", help="split a factoid set into facts a model knows / not")
    filt.add_argument("dataset", help="popqa, triviaqa, lama, entityquestions, webquestions")
    filt.add_argument("--path", help="local file or folder (default: the hub)")
    filt.add_argument("--split", help="hub split, or a key of a JSON object of lists")
    filt.add_argument("--model", default="smollm2-135m", help="the judge: an embedded model "
                      "name, a model folder or a hub ID (default: smollm2-135m)")  # fmt: skip
    filt.add_argument("--limit", type=int, help="judge only the first N (seeded order)")
    filt.add_argument("--seed", type=int, default=0, help="seed of that order (default 0)")
    filt.add_argument("--out", help="folder for known.jsonl / unknown.jsonl")
    filt.add_argument("--quiet", action="store_true", help="warnings only, no progress bars")
    filt.set_defaults(func=cmd_filter)


def _add_grid(sub: argparse._SubParsersAction) -> None:
    grid = sub.add_parser("grid", help="run a grid of experiments (resumes; shares stages)")
    grid.add_argument("grid", help="a grid YAML file, or a preset in configs/grids/")
    _add_set_option(grid, "override a field in every run, e.g. --set stages[0].size=200")
    grid.add_argument("--profile", help="a named override set of the grid file, e.g. paper")
    grid.add_argument("--only", action="append", metavar="AXIS=LABEL",
                      help="run a slice: only runs with this axis value (repeatable; values "
                      "of one axis are alternatives), e.g. --only strategy=-/Generic")  # fmt: skip
    grid.add_argument("--data-dir", help="folder with local dataset copies ({data_dir} in the "
                      "grid file); default $FACTMEM_DATA_DIR, else the hub")  # fmt: skip
    grid.add_argument("--backend", choices=["local", "ray"], default="local",
                      help="local: stages one after another in this process; ray: stages as "
                      "Ray tasks, locally or on a cluster (default: local)")  # fmt: skip
    grid.add_argument("--jobs", type=int, default=1, metavar="N",
                      help="local: train up to N independent stages at once, each in its own "
                      "process with cores / N torch threads (default 1: one stage at a time "
                      "with every core; on a 2-core CPU --jobs 2 finishes a grid sooner, "
                      "BENCHMARKS.md)")  # fmt: skip
    grid.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    grid.add_argument("--cpus-per-stage", type=float, default=1.0, help="Ray: CPUs per stage")
    grid.add_argument("--gpus-per-stage", type=float, default=0.0, help="Ray: GPUs per stage")
    grid.add_argument("--archive", metavar="DIR", help="skip runs already archived in DIR and "
                      "archive each finished run there (results, no weights; see factmem "
                      "archive), so a grid can be finished over several machines")  # fmt: skip
    grid.add_argument("--status", action="store_true", help="what is done, running, failed")
    grid.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    grid.add_argument("--gpu", help="with --dry-run: estimate the cost on this accelerator "
                      "(A100, H100, L40S, A10G): tokens, hours, memory per device")  # fmt: skip
    grid.add_argument("--here", action="store_true",
                      help="with --dry-run: hours to train what is left on this machine, at "
                      "the speed that stages recorded as trained on its processor reached "
                      "(runs folder and --archive)")  # fmt: skip
    grid.add_argument("--gpus", type=int, default=8, help="devices for --gpu (default 8)")
    grid.add_argument("--mfu", type=float, default=0.35,
                      help="model FLOP utilisation for --gpu (default 0.35)")  # fmt: skip
    grid.add_argument("--quiet", action="store_true", help="warnings only, no progress bars")
    grid.set_defaults(func=cmd_grid)


def _add_analyses(sub: argparse._SubParsersAction) -> None:
    """lens, gradients: the paper's analyses of finished runs' models."""
    lens = sub.add_parser("lens", help="Logit Lens: the layer where each answer first appears")
    lens.add_argument("runs", nargs="+", help="run directories (one figure, one line each)")
    lens.add_argument("--stage", type=int, help="whose model (default: the last trained)")
    lens.add_argument("--set", help="which stage's set (default: stage 1's, D_A)")
    lens.add_argument("-n", type=int, default=100, help="facts (paper: 100)")
    lens.add_argument("--top-k", type=int, default=10, help="a hit is a top-k token (paper: 10)")
    lens.add_argument("--out", help="figure folder (default: FIRST_RUN/lens)")
    lens.set_defaults(func=cmd_lens)
    grads = sub.add_parser("gradients", help="cosine of the D_A, D_B (and D_B+D_M) gradients")
    grads.add_argument("runs", nargs="+", help="run directories")
    grads.add_argument("--stage", type=int, default=1, help="whose model (default: stage 1)")
    grads.add_argument("-n", type=int, default=32, help="examples per set")
    grads.add_argument("--mix-from", help="take D_B+D_M from this run's next-stage mixture")
    grads.set_defaults(func=cmd_gradients)


def _add_results(sub: argparse._SubParsersAction) -> None:
    """archive, report: finished runs' results kept and shown."""
    arch = sub.add_parser("archive", help="copy finished runs' results (no weights) to a folder")
    arch.add_argument("sources", nargs="+", help="run directories, grid folders or a runs root")
    arch.add_argument("--out", help="the archive folder (<out>/<grid>/<run>/)")
    arch.add_argument(
        "--record-data-from", metavar="DIR",
        help="instead of archiving: give archived runs made before archives recorded the "
        "digests of their data files those digests, reading the files at the runs' data paths "
        "from DIR (where their grid ran); a later grid spelling --data-dir otherwise then "
        "recognises them",
    )  # fmt: skip
    arch.add_argument(
        "--with-text",
        action="store_true",
        help="keep prompts, answers and "
        "outputs in predictions (default: a hash of each prompt and the verdict)",
    )
    arch.set_defaults(func=cmd_archive)
    report = sub.add_parser("report", help="tables, figures and an HTML page from finished runs")
    report.add_argument("runs_dirs", nargs="+", metavar="RUNS_DIR",
                        help="grid directories, folders of run directories, or archives "
                        "(factmem archive); a run found in several counts once")  # fmt: skip
    report.add_argument("--out", help="output folder (default: FIRST_RUNS_DIR/report)")
    report.add_argument("--paper", help="paper vs ours: `remix` (the REMIX paper's Tables 2-6, "
                        "shipped with factmem) or a YAML of published cells")  # fmt: skip
    report.add_argument("--versus", action="append", default=[], metavar="STRATEGY",
                        help="also pair every strategy against this one, fact by fact, as "
                        "against No Mixing: a control, e.g. 'Plain 3x steps' or 'Replay 0.1' "
                        "(repeatable)")  # fmt: skip
    report.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except FactmemError as err:
        print(f"factmem: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `factmem ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a full disk, a read-only folder: every write is atomic
        where = f" ({err.filename})" if err.filename else ""
        print(f"factmem: error: {err.strerror or err}{where}; no half-written file was left "
              "as finished: fix that and run the same command again to resume",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("\nfactmem: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
