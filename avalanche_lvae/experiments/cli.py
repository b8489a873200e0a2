"""The ``avalanche-lvae`` command (also ``python -m avalanche_lvae``).

``avalanche-lvae run <stream> [flags]`` trains every strategy of
``--strategies`` on the stream, experience by experience, evaluating on every
test set seen so far after each one; it shows a progress bar per strategy,
prints a table and optionally writes the results JSON (layout in
:mod:`avalanche_lvae.experiments.results`), plots and checkpoints::

    avalanche-lvae run permuted_mnist --strategies lvae,ewc,gr --results-json pm.json --plots plots/
    avalanche-lvae run split_mnist --max-train-per-experience 1000 --no-frechet      # quick
    avalanche-lvae run permuted_mnist --help                                          # every flag
    torchrun --standalone --nproc_per_node=2 -m avalanche_lvae run permuted_mnist --batch-size 256 --strategies lvae

Under ``torchrun`` (docs/distributed.md, :mod:`avalanche_lvae.experiments.distributed_run`)
``--batch-size`` is the global minibatch and only rank 0 prints and writes.

Exit codes: 0 done (or ``--help``); 2 a bad flag, a missing dataset, a bad
stream size or an unusable checkpoint (one ``error: ...`` line on stderr);
1 a training loss went non-finite (the last checkpoint is left as it was).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from . import distributed_run
from .arguments import OneLineErrorParser, build_run_parser, check_run_arguments
from .stream_specs import STREAMS, build_benchmark

__all__ = ["main", "run_stream", "build_parser"]

N_CLASSES = 10  # every stream here has the ten MNIST / FashionMNIST labels


def build_parser(prog: str = "avalanche-lvae") -> argparse.ArgumentParser:
    """The top-level parser: the ``run`` command and its stream (its flags are parsed per stream)."""
    parser = OneLineErrorParser(prog=prog, description="Lifelong generative modelling for Avalanche: run a "
                                "continual-learning stream with the lifelong VAE next to Avalanche's strategies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="train and evaluate strategies on a stream",
                              description="Train and evaluate strategies on a stream; "
                                          f"`{prog} run STREAM --help` lists the flags.")
    streams = ", ".join(f"{name} ({spec.description})" for name, spec in STREAMS.items())
    run.add_argument("stream", choices=list(STREAMS), metavar="STREAM", help=f"one of: {streams}")
    run.add_argument("flags", nargs=argparse.REMAINDER, help=f"see `{prog} run STREAM --help`")
    return parser


def run_stream(stream: str, argv: Sequence[str], prog: str = "avalanche-lvae") -> int:
    """``run <stream> <argv>``: parse the flags, run every strategy, print the table, write the outputs.

    Returns the exit code and never raises ``SystemExit``. Nothing is written
    to ``--results-json`` unless every strategy finished.
    """
    # Two import/setup-time warnings that say nothing about this run.
    warnings.filterwarnings("ignore", message="no QP solver found")  # avalanche's GEM import
    warnings.filterwarnings("ignore", message="No loggers specified")  # no logger is on purpose
    spec = STREAMS[stream]
    parser = build_run_parser(f"{prog} run {stream}", spec)
    try:
        with distributed_run.errors_on_main_only():
            args = parser.parse_args(list(argv))
            check_run_arguments(parser, args)
            distributed_run.check_distributed_arguments(parser, args)
    except SystemExit as exc:  # argparse: --help (0) or parser.error (2)
        return exc.code if isinstance(exc.code, int) else 2
    config = dict(vars(args))  # before start(): under torchrun --device becomes this rank's device
    distributed_run.start(args)
    try:
        config.update(distributed_run.run_config(args))
        with distributed_run.quiet_unless_main():
            return _run_and_report(stream, spec, args, config)
    finally:
        distributed_run.finish()


def _run_and_report(stream: str, spec, args, config: dict) -> int:
    """Build the stream, run every strategy, print the table and write the outputs (rank 0 only)."""
    from avalanche_lvae import NonFiniteLossError

    from .checkpoints import CheckpointError
    from .plots import write_plots
    from .reference import build_reference, reference_summary
    from .results import format_table, write_json_atomic
    from .runner import run_strategy
    from .strategies import GENERATIVE

    main_process = distributed_run.is_main_process()
    try:
        benchmark = build_benchmark(spec, args)
        reference = None
        if not args.no_frechet and any(name in GENERATIVE for name in args.strategies):
            with distributed_run.main_process_first():  # rank 0 trains and caches it, the others load the cache
                reference = build_reference(stream, benchmark, args, spec.reference_epochs)
        results = {name: run_strategy(name, benchmark, args, config, N_CLASSES, reference, progress_bar=main_process)
                   for name in args.strategies}
    except NonFiniteLossError as exc:  # raised by every rank at the same iteration
        distributed_run.print_error(str(exc))
        return 1
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        distributed_run.print_error(str(exc))
        return 2
    if not main_process:
        return 0
    print(f"\n{stream}: {args.n_experiences} experiences, {args.epochs} epoch(s) each, seed {args.seed}")
    print(format_table(results))
    if args.results_json:
        write_json_atomic(args.results_json, {"benchmark": stream, "config": config,
                                              "reference_classifier": reference_summary(reference),
                                              "results": results})
        print(f"results written to {args.results_json}")
    if args.plots:
        written = write_plots(args.plots, stream, results)
        print(f"{len(written)} plot(s) written to {args.plots}")
    return 0


def main(argv: Optional[Sequence[str]] = None, prog: str = "avalanche-lvae") -> int:
    """The console entry point; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad command / stream (2)
        return exc.code if isinstance(exc.code, int) else 2
    return run_stream(args.stream, args.flags, prog)
