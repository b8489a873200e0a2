"""A paper experiment over several seeds: the machinery of the ``benchmarks/reproduce_*.py`` scripts.

A script describes its experiment as an :class:`Experiment` (stream,
strategies, metrics, the paper's numbers) and calls :func:`run_cli`, which

1. parses the common flags (``--quick``, ``--seeds``, ``--epochs``,
   ``--out-dir``, ``--dataset-root``, ``--strategies`` and the size knobs
   ``--n-experiences``, ``--max-train/test-per-experience``, ``--fd-samples``);
2. trains every strategy once per seed with the runner of ``avalanche-lvae
   run`` (:func:`~avalanche_lvae.experiments.runner.run_strategy`: train, then
   evaluate on every test set seen so far, after each experience), with the
   lifelong model at the papers' equations (:data:`PAPER_EQUATIONS`);
3. aggregates each per-experience metric over the seeds (mean and numpy's
   population std, ``ddof=0``, so one seed gives std 0);
4. prints a table, writes ``<out-dir>/<experiment>[_quick].json`` atomically
   and ``<out-dir>/<experiment>[_quick].png`` (one panel per metric).

The seed varies the model's initial weights and the minibatch order; the
stream itself (permutations, class order) is the papers' fixed one, built
with stream seed 0, so that every seed sees the same tasks and a single
reference classifier (the cached ``reference_<stream>_seed0.pt``) scores
every run. ``--quick`` runs write ``*_quick.*`` files, so they never
overwrite full results.

JSON layout::

    {"experiment": str, "title": str, "command": "python benchmarks/<script>.py ...",
     "config": {every flag and every strategy hyperparameter},
     "seeds": [int], "reference_classifier": null | {...},
     "per_seed": {"<seed>": {strategy: <run_strategy result, see avalanche_lvae.experiments.results>}},
     "summary": {strategy: {metric: {"mean": [per experience], "std": [per experience]}}},
     "sample_grids": {strategy: {"<seed>": path}}      # only experiments that save grids
     "wall_seconds": float}

metric is ``accuracy`` (average over the seen test sets), ``neg_elbo`` (nats),
``frechet_distance`` or ``component_purity`` (row purity of the sample grid,
lvae only); a metric a strategy does not have is left out.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .arguments import (
    DEFAULT_FD_SAMPLES,
    OneLineErrorParser,
    build_run_parser,
    parse_strategy_list,
    positive_int,
)
from .stream_specs import STREAMS

__all__ = ["Experiment", "PAPER_EQUATIONS", "STREAM_SEED", "QUICK", "build_parser", "strategy_args",
           "run_experiment", "command_line", "run_cli"]

N_CLASSES = 10
STREAM_SEED = 0
# Sizes of --quick: a smoke run of a few minutes, not a measurement.
QUICK = dict(epochs=1, max_train_per_experience=500, max_test_per_experience=200, fd_samples=500)
# The lifelong model as the papers write it (``--preset paper``: avalanche_lvae.presets), with replay
# mixed by loss weights (every real image every epoch), as every committed reproduction was measured.
PAPER_EQUATIONS = dict(preset="paper", replay_mixing="loss_weights")
# Flags of the run namespace that mean nothing here (the seed loop and the grids set their own).
_NOT_CONFIG = ("seed", "results_json", "tensorboard", "plots", "checkpoint_dir", "no_frechet")


@dataclass(frozen=True)
class Experiment:
    """What a reproduction script runs.

    Attributes:
        name: stem of the output files, e.g. ``lgm_split_fmnist``.
        title: printed above the table and on the figure.
        stream: the benchmark builder, called as ``stream(n_experiences=..., seed=STREAM_SEED,
            dataset_root=..., max_train_per_experience=..., max_test_per_experience=...)``
            (the signature of ``avalanche_lvae.streams.permuted_mnist``).
        reference_name: names the stream in the reference classifier's cache.
        reference_epochs: epochs of the reference classifier when it is not cached yet.
        baselines_of: the runner stream (``permuted_mnist``, ``split_fmnist``, ``split_mnist``)
            whose baseline settings (SI's lambda and eps) the strategies use.
        n_experiences, epochs: defaults of the full run.
        strategies: strategies run by default (the papers' comparison).
        metrics: metrics of the table and the figure, in order.
        paper: the paper's numbers, printed under the table.
        variants: ``label -> flags``: ``lvae`` built with these flags changed from
            :data:`PAPER_EQUATIONS` (an ablation); when given, ``--strategies`` chooses among them.
        save_grids: keep the last sample grid of every strategy and seed.
    """

    name: str
    title: str
    stream: Callable
    reference_name: str
    reference_epochs: int
    baselines_of: str
    n_experiences: int
    epochs: int = 3
    strategies: Tuple[str, ...] = ("lvae", "naive", "ewc", "cumulative")
    metrics: Tuple[str, ...] = ("accuracy", "neg_elbo", "frechet_distance")
    paper: str = ""
    variants: Mapping[str, dict] = field(default_factory=dict)
    save_grids: bool = False

    @property
    def choices(self) -> Tuple[str, ...]:
        """What ``--strategies`` accepts: the variants, else every strategy of the runner."""
        from .strategies import STRATEGIES

        return tuple(self.variants) or STRATEGIES


# --------------------------------------------------------------------------- command line
def _seed_list(text: str) -> List[int]:
    if not text.strip():
        raise argparse.ArgumentTypeError("no seed given; pass e.g. --seeds 0,1,2")
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) >= 2**32:
            raise argparse.ArgumentTypeError(f"expected a comma list of integers in [0, 2**32), got {text!r}")
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} names a seed twice")
    return seeds


def build_parser(prog: str, description: str, experiment: Experiment, default_out_dir: str,
                 add_arguments=None) -> argparse.ArgumentParser:
    """The flags of every reproduction script; bad values exit with code 2 and one ``error:`` line."""
    p = OneLineErrorParser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK} unless given; writes *_quick.json / *_quick.png")
    p.add_argument("--seeds", type=_seed_list, default="0,1,2", help="comma list of seeds (default 0,1,2)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"epochs per experience (default {experiment.epochs})")
    p.add_argument("--strategies", default=None, help=f"comma list from {','.join(experiment.choices)} "
                                                      f"(default {','.join(experiment.strategies)})")
    p.add_argument("--n-experiences", type=positive_int, default=None,
                   help=f"experiences of the stream (default {experiment.n_experiences})")
    p.add_argument("--max-train-per-experience", type=positive_int, default=None, metavar="N")
    p.add_argument("--max-test-per-experience", type=positive_int, default=None, metavar="N")
    p.add_argument("--fd-samples", type=positive_int, default=None, metavar="N",
                   help=f"generated images per Frechet distance (default {DEFAULT_FD_SAMPLES})")
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="training and evaluation minibatch (default 256)")
    p.add_argument("--out-dir", default=default_out_dir, help="where the JSON and PNG go (default %(default)s)")
    p.add_argument("--dataset-root", default=None, help="folder holding MNIST/raw and FashionMNIST/raw")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    if add_arguments is not None:
        add_arguments(p)
    return p


def _complete_args(parser, args, experiment: Experiment) -> None:
    """Fill the defaults that depend on ``--quick`` and the experiment; check ``--strategies``."""
    for key, quick_value in QUICK.items():
        if getattr(args, key) is None and args.quick:
            setattr(args, key, quick_value)
    args.epochs = args.epochs or experiment.epochs
    args.fd_samples = args.fd_samples or DEFAULT_FD_SAMPLES
    args.n_experiences = args.n_experiences or experiment.n_experiences
    given = ",".join(experiment.strategies) if args.strategies is None else args.strategies
    args.strategies = parse_strategy_list(parser, given, experiment.choices)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        parser.error(f"argument --out-dir: {args.out_dir} exists and is not a folder")


def strategy_args(experiment: Experiment, args) -> argparse.Namespace:
    """The run namespace of this reproduction: the runner's defaults, this run's sizes, :data:`PAPER_EQUATIONS`."""
    ns = build_run_parser("reproduction", STREAMS[experiment.baselines_of]).parse_args([])
    for key in ("strategies", "n_experiences", "epochs", "batch_size", "dataset_root", "device", "fd_samples",
                "max_train_per_experience", "max_test_per_experience"):
        setattr(ns, key, getattr(args, key))
    ns.seed = STREAM_SEED  # until the seed loop sets it; the reference classifier is built with it
    for key, value in PAPER_EQUATIONS.items():
        setattr(ns, key, value)
    return ns


# --------------------------------------------------------------------------- running
def _keep_last_grid(folder: str, target: str) -> Optional[str]:
    """Copy the sample grid saved after the last experience under ``folder`` (any depth) to ``target``."""
    grids = sorted(glob.glob(os.path.join(folder, "**", "samples_*_after_exp*.png"), recursive=True),
                   key=os.path.basename)
    if not grids:
        return None
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return shutil.copyfile(grids[-1], target)


def _run_one(name: str, experiment: Experiment, benchmark, ns, config: dict, reference) -> dict:
    """``run_strategy`` of strategy ``name``, or of ``lvae`` with the flags of variant ``name``."""
    from .runner import run_strategy

    progress_bar = sys.stderr.isatty()
    if name not in experiment.variants:
        return run_strategy(name, benchmark, ns, config, N_CLASSES, reference, progress_bar=progress_bar)
    variant = copy.copy(ns)
    for key, value in experiment.variants[name].items():
        setattr(variant, key, value)
    return run_strategy(name, benchmark, variant, config, N_CLASSES, reference, progress_bar=progress_bar,
                        kind="lvae")


def run_experiment(experiment: Experiment, args, command: str) -> dict:
    """Train every strategy for every seed; write the JSON, the PNG (and sample grids); return the JSON payload."""
    from .reference import build_reference, reference_summary
    from .results import write_json_atomic
    from .seed_summary import format_summary_table, plot_summary, summarize

    started = time.perf_counter()
    ns = strategy_args(experiment, args)
    benchmark = experiment.stream(n_experiences=args.n_experiences, seed=STREAM_SEED, dataset_root=args.dataset_root,
                                  max_train_per_experience=args.max_train_per_experience,
                                  max_test_per_experience=args.max_test_per_experience)
    reference = build_reference(experiment.reference_name, benchmark, ns, experiment.reference_epochs)
    config = {k: v for k, v in vars(ns).items() if k not in _NOT_CONFIG}
    config.update(seeds=args.seeds, quick=args.quick, stream_seed=STREAM_SEED)
    if experiment.variants:
        config["variants"] = {name: dict(experiment.variants[name]) for name in args.strategies}
    stem = experiment.name + ("_quick" if args.quick else "")
    os.makedirs(args.out_dir, exist_ok=True)
    per_seed: Dict[str, dict] = {}
    grids: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            ns.seed = seed
            # Every grid of every evaluation goes to scratch; only the last one per strategy is kept.
            ns.plots = os.path.join(scratch, str(seed)) if experiment.save_grids else None
            per_seed[str(seed)] = {name: _run_one(name, experiment, benchmark, ns, config, reference)
                                   for name in args.strategies}
            for name in args.strategies if experiment.save_grids else ():
                kept = _keep_last_grid(os.path.join(ns.plots, name),
                                       os.path.join(args.out_dir, f"{stem}_samples", f"{name}_seed{seed}.png"))
                if kept is not None:
                    grids.setdefault(name, {})[str(seed)] = os.path.relpath(kept, args.out_dir)
    summary = summarize(per_seed, experiment.metrics)
    payload = dict(experiment=experiment.name, title=experiment.title, command=command, config=config,
                   seeds=args.seeds, reference_classifier=reference_summary(reference),
                   per_seed=per_seed, summary=summary)
    if experiment.save_grids:
        payload["sample_grids"] = grids
    payload["wall_seconds"] = time.perf_counter() - started
    json_path, png_path = (os.path.join(args.out_dir, stem + ext) for ext in (".json", ".png"))
    write_json_atomic(json_path, payload)
    plot_summary(summary, experiment.metrics, f"{experiment.title} (seeds {','.join(map(str, args.seeds))})",
                 png_path)
    print(f"\n{experiment.title}: {args.n_experiences} experiences, {args.epochs} epoch(s) each, "
          f"seeds {','.join(map(str, args.seeds))}; mean ± std after the last experience")
    print(format_summary_table(summary, per_seed, experiment.metrics))
    if experiment.paper:
        print(f"paper: {experiment.paper}")
    print(f"wrote {json_path} and {png_path} ({payload['wall_seconds']:.0f} s)")
    return payload


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run from the repository root: ``python <folder>/<script> ...``."""
    path = Path(script).resolve()
    return shlex.join(["python", f"{path.parent.name}/{path.name}"] + list(argv))


def run_cli(argv: Optional[Sequence[str]], script: str, experiment, add_arguments=None, description: str = "") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the experiment, return the exit code.

    0: done; 2: a bad flag, a missing dataset or a bad stream size (one
    ``error:`` line on stderr); 1: a training loss went non-finite.
    ``experiment`` is an :class:`Experiment`, or a function of the parsed
    flags returning one (it then depends on the script's own flags, e.g.
    ``--dataset``; it is called with None for the defaults ``--help`` shows).
    Results go to ``<folder of script>/results`` unless ``--out-dir`` says otherwise.
    """
    from avalanche_lvae import NonFiniteLossError

    make_experiment = experiment if callable(experiment) else (lambda args: experiment)
    warnings.filterwarnings("ignore", message="No loggers specified")  # no logger is on purpose
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_line(script, argv)
    probe = make_experiment(None)  # the defaults shown by --help
    default_out_dir = str(Path(script).resolve().parent / "results")
    parser = build_parser(os.path.basename(script), description, probe, default_out_dir, add_arguments)
    try:
        args = parser.parse_args(argv)
        experiment = make_experiment(args)
        _complete_args(parser, args, experiment)
    except SystemExit as exc:  # --help (0) or parser.error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        run_experiment(experiment, args, command)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
