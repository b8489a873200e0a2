"""Shared machinery of the ``reproduce_*.py`` scripts: one experiment, several seeds, mean ± std.

A script describes its experiment as an :class:`Experiment` (stream,
strategies, metrics, the paper's numbers) and calls :func:`run_cli`, which

1. parses the common flags (``--quick``, ``--seeds``, ``--epochs``,
   ``--out-dir``, ``--dataset-root``, ``--strategies`` and the size knobs
   ``--n-experiences``, ``--max-train/test-per-experience``, ``--fd-samples``);
2. trains every strategy once per seed with the example scripts' machinery:
   ``examples/_runner.run_strategy`` (train, then evaluate on every test set
   seen so far, after each experience), the strategy zoo of
   ``examples/_strategies.py`` and the Frechet distance's reference
   classifier of ``examples/_common.build_reference``;
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
     "per_seed": {"<seed>": {strategy: <examples/_runner.run_strategy result>}},
     "summary": {strategy: {metric: {"mean": [per experience], "std": [per experience]}}},
     "sample_grids": {strategy: {"<seed>": path}}      # only experiments that save grids
     "wall_seconds": float}

metric is ``accuracy`` (average over the seen test sets), ``neg_elbo`` (nats),
``frechet_distance`` or ``component_purity`` (row purity of the sample grid,
lvae only); a metric a strategy does not have is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import importlib
import importlib.util
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DEFAULT_OUT_DIR = REPO / "benchmarks" / "results"
N_CLASSES = 10
STREAM_SEED = 0
# Sizes of --quick: a smoke run of a few minutes, not a measurement.
QUICK = dict(epochs=1, max_train_per_experience=500, max_test_per_experience=200, fd_samples=500)
# metric name -> (key of the run_strategy result, axis label, table column, table format)
METRICS = {
    "accuracy": ("avg_accuracy_per_experience", "average accuracy, seen tasks", "avg acc", "{:.3f}"),
    "neg_elbo": ("neg_elbo_per_experience", "negative test ELBO (nats)", "-ELBO (nats)", "{:.1f}"),
    "frechet_distance": ("frechet_distance_per_experience", "Frechet distance", "FD", "{:.2f}"),
    "component_purity": ("component_purity_per_experience", "row purity of the sample grid", "purity", "{:.2f}"),
}
# Flags of the examples' namespace that mean nothing here (the seed loop and the grids set their own).
_NOT_CONFIG = ("seed", "results_json", "tensorboard", "plots", "checkpoint_dir", "no_frechet")


def example_module(name: str):
    """Import ``examples/<name>.py``.

    The example helpers import each other as top-level modules (as when an
    example script runs), so ``examples/`` goes on ``sys.path``; importing
    ``examples.<name>`` instead would find Avalanche's own ``examples`` package.
    """
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


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
        example: the example script (``permuted_mnist`` or ``split_fmnist``) whose
            defaults configure the strategies (EWC lambda, SI / LwF settings, ...).
        n_experiences, epochs: defaults of the full run.
        strategies: strategies run by default (the papers' comparison).
        choices: strategies ``--strategies`` accepts; None: every strategy of the examples.
        metrics: metrics of the table and the figure, in order.
        paper: the paper's numbers, printed under the table.
        factories: ``name -> (args, n_classes, reference) -> strategy`` for
            strategies the examples cannot build by name (ablation variants).
        save_grids: keep the last sample grid of every strategy and seed.
    """

    name: str
    title: str
    stream: Callable
    reference_name: str
    reference_epochs: int
    example: str
    n_experiences: int
    epochs: int = 3
    strategies: Tuple[str, ...] = ("lvae", "naive", "ewc", "cumulative")
    choices: Optional[Tuple[str, ...]] = None
    metrics: Tuple[str, ...] = ("accuracy", "neg_elbo", "frechet_distance")
    paper: str = ""
    factories: Mapping[str, Callable] = field(default_factory=dict)
    save_grids: bool = False


# --------------------------------------------------------------------------- streams
def split_mnist(n_experiences: int = 10, seed: int = 0, dataset_root=None,
                max_train_per_experience: Optional[int] = None, max_test_per_experience: Optional[int] = None):
    """Class-incremental MNIST, one class per experience by default (LGM App. 9.4).

    Like ``avalanche_lvae.streams.split_fmnist`` (same class order for a seed,
    pixels in [0, 1], task label 0, first N images of each class kept) but
    over MNIST, built with the package's tensor-backed helpers.
    """
    from avalanche_lvae.data import load_tensors, require_dataset
    from avalanche_lvae.streams import _benchmark_from_tensors

    if n_experiences not in (1, 2, 5, 10):
        raise ValueError(f"n_experiences={n_experiences} does not divide the 10 MNIST classes; use 1, 2, 5 or 10.")
    root = require_dataset("MNIST", dataset_root)
    order = torch.randperm(N_CLASSES, generator=torch.Generator().manual_seed(seed)).tolist()
    per_exp = N_CLASSES // n_experiences
    groups = [torch.tensor(order[i: i + per_exp]) for i in range(0, N_CLASSES, per_exp)]

    def split(train: bool, n: Optional[int]):
        x, y = load_tensors("MNIST", train, root)
        keep = [torch.nonzero(torch.isin(y, g)).flatten()[:n] for g in groups]
        return [(x[k], y[k]) for k in keep]

    return _benchmark_from_tensors(split(True, max_train_per_experience), split(False, max_test_per_experience))


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


def _choices(experiment: Experiment) -> Tuple[str, ...]:
    return experiment.choices or example_module("_cli").STRATEGIES


def build_parser(prog: str, description: str, experiment: Experiment, add_arguments=None) -> argparse.ArgumentParser:
    """The flags of every reproduction script; bad values exit with code 2 and one ``error:`` line."""
    cli = example_module("_cli")
    positive = cli._positive_int
    p = cli._Parser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK} unless given; writes *_quick.json / *_quick.png")
    p.add_argument("--seeds", type=_seed_list, default="0,1,2", help="comma list of seeds (default 0,1,2)")
    p.add_argument("--epochs", type=positive, default=None, help=f"epochs per experience (default {experiment.epochs})")
    p.add_argument("--strategies", default=None,
                   help=f"comma list from {','.join(_choices(experiment))} (default {','.join(experiment.strategies)})")
    p.add_argument("--n-experiences", type=positive, default=None,
                   help=f"experiences of the stream (default {experiment.n_experiences})")
    p.add_argument("--max-train-per-experience", type=positive, default=None, metavar="N")
    p.add_argument("--max-test-per-experience", type=positive, default=None, metavar="N")
    p.add_argument("--fd-samples", type=positive, default=None, metavar="N",
                   help=f"generated images per Frechet distance (default {cli.DEFAULT_FD_SAMPLES})")
    p.add_argument("--batch-size", type=positive, default=256, help="training and evaluation minibatch (default 256)")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="where the JSON and PNG go (default %(default)s)")
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
    args.fd_samples = args.fd_samples or example_module("_cli").DEFAULT_FD_SAMPLES
    args.n_experiences = args.n_experiences or experiment.n_experiences
    given = ",".join(experiment.strategies) if args.strategies is None else args.strategies
    names = [s.strip() for s in given.split(",") if s.strip()]
    unknown = [s for s in names if s not in _choices(experiment)]
    if unknown or not names or len(set(names)) != len(names):
        parser.error(f"argument --strategies: {args.strategies!r} is empty, repeats a name or names an unknown "
                     f"strategy; choose from {','.join(_choices(experiment))}")
    args.strategies = names
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        parser.error(f"argument --out-dir: {args.out_dir} exists and is not a folder")


def strategy_args(experiment: Experiment, args) -> argparse.Namespace:
    """The example scripts' namespace (every strategy hyperparameter at its example default) for this run."""
    spec = importlib.util.spec_from_file_location(f"lvae_example_{experiment.example}",
                                                  EXAMPLES / f"{experiment.example}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ns = script.build_parser().parse_args([])
    for key in ("strategies", "n_experiences", "epochs", "batch_size", "dataset_root", "device", "fd_samples",
                "max_train_per_experience", "max_test_per_experience"):
        setattr(ns, key, getattr(args, key))
    ns.seed = STREAM_SEED  # until the seed loop sets it; the reference classifier is built with it
    # Reproductions run the papers' equations as written, whatever an example's tuned defaults.
    ns.classification_weight, ns.continuous_consistency, ns.replay_labels = 1.0, 0.0, "prior"
    ns.component_prior = "standard"  # z_c ~ N(0, I) for every z_d value (LGM Sec. 4.3)
    # Every committed reproduction was measured with loss weights (the examples'
    # mixing until split_fmnist.py switched to batch composition in session 6).
    ns.replay_mixing = "loss_weights"
    ns.replay_temperature = 1.0  # the Bernoulli mean, as every committed reproduction was measured
    return ns


# --------------------------------------------------------------------------- running
def lvae_variant(name: str, **overrides):
    """A factory for ``Experiment.factories``: ``lvae`` exactly as the examples build it
    (``examples/_strategies.make_strategy``), with some ``LifelongVAEStrategy`` arguments
    overridden (e.g. ``info_weight=0``); its grids go to ``<args.plots>/<name>/lvae/``.
    """
    def build(args, n_classes, reference):
        variant_args = copy.copy(args)
        variant_args.plots = args.plots and os.path.join(args.plots, name)
        strategy, _ = example_module("_strategies").make_strategy("lvae", variant_args, n_classes, reference,
                                                                   **overrides)
        return strategy

    return build


@contextlib.contextmanager
def _extra_strategies(factories: Mapping[str, Callable]):
    """Let ``run_strategy`` build the strategies of ``factories`` too.

    ``run_strategy`` builds its strategy through ``_runner.make_strategy(name,
    ...)``, which knows only the examples' names; for the duration of the run
    that lookup first tries ``factories`` (the ablation's variants).
    """
    runner = example_module("_runner")
    original = runner.make_strategy

    def make_strategy(name, args, n_classes, reference=None, tb_dir=None):
        if name in factories:
            return factories[name](args, n_classes, reference), True
        return original(name, args, n_classes, reference, tb_dir)

    runner.make_strategy = make_strategy
    try:
        yield
    finally:
        runner.make_strategy = original


def _keep_last_grid(folder: str, target: str) -> Optional[str]:
    """Copy the sample grid saved after the last experience under ``folder`` (any depth) to ``target``."""
    grids = sorted(glob.glob(os.path.join(folder, "**", "samples_*_after_exp*.png"), recursive=True),
                   key=os.path.basename)
    if not grids:
        return None
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return shutil.copyfile(grids[-1], target)


def summarize(per_seed: Mapping[str, Mapping[str, dict]], metrics: Sequence[str]) -> Dict[str, dict]:
    """Mean and population std (``ddof=0``) over the seeds of every per-experience metric of every strategy.

    ``per_seed`` maps seed -> strategy -> ``run_strategy`` result; a metric
    whose values are None (the strategy has no generative model, or no
    Frechet distance was computed) is left out.
    """
    seeds = list(per_seed)
    summary: Dict[str, dict] = {}
    for strategy in per_seed[seeds[0]]:
        summary[strategy] = {}
        for metric in metrics:
            rows = [per_seed[s][strategy][METRICS[metric][0]] for s in seeds]
            if any(r is None for r in rows):
                continue
            values = np.asarray(rows, dtype=float)  # [seeds, experiences]
            summary[strategy][metric] = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist()}
    return summary


def format_table(summary: Mapping[str, dict], per_seed: Mapping[str, Mapping[str, dict]],
                 metrics: Sequence[str]) -> str:
    """One row per strategy: each metric after the last experience as mean ± std, and mean training seconds."""
    head = f"{'strategy':<17}" + "".join(f"{METRICS[m][2]:>20}" for m in metrics) + f"{'train s':>10}"
    lines = [head, "-" * len(head)]
    for strategy, by_metric in summary.items():
        cells = []
        for metric in metrics:
            if metric not in by_metric:
                cells.append(f"{'-':>20}")
                continue
            fmt = METRICS[metric][3]
            mean, std = by_metric[metric]["mean"][-1], by_metric[metric]["std"][-1]
            cells.append(f"{fmt.format(mean) + ' ± ' + fmt.format(std):>20}")
        seconds = np.mean([runs[strategy]["train_seconds"] for runs in per_seed.values()])
        lines.append(f"{strategy:<17}" + "".join(cells) + f"{seconds:>10.1f}")
    return "\n".join(lines)


def plot_summary(summary: Mapping[str, dict], metrics: Sequence[str], title: str, path: str) -> None:
    """One panel per metric: the mean over seeds per strategy, with a ±std band, against experiences seen."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for strategy, by_metric in summary.items():
            if metric not in by_metric:
                continue
            mean, std = np.asarray(by_metric[metric]["mean"]), np.asarray(by_metric[metric]["std"])
            x = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(x, mean, marker="o", label=strategy)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("experiences seen")
        ax.set_ylabel(METRICS[metric][1])
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_experiment(experiment: Experiment, args, command: str) -> dict:
    """Train every strategy for every seed; write the JSON, the PNG (and sample grids); return the JSON payload."""
    common, runner = example_module("_common"), example_module("_runner")
    started = time.perf_counter()
    ns = strategy_args(experiment, args)
    benchmark = experiment.stream(n_experiences=args.n_experiences, seed=STREAM_SEED, dataset_root=args.dataset_root,
                                  max_train_per_experience=args.max_train_per_experience,
                                  max_test_per_experience=args.max_test_per_experience)
    reference = common.build_reference(experiment.reference_name, benchmark, ns, experiment.reference_epochs)
    config = {k: v for k, v in vars(ns).items() if k not in _NOT_CONFIG}
    config.update(seeds=args.seeds, quick=args.quick, stream_seed=STREAM_SEED)
    stem = experiment.name + ("_quick" if args.quick else "")
    os.makedirs(args.out_dir, exist_ok=True)
    per_seed: Dict[str, dict] = {}
    grids: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch, _extra_strategies(experiment.factories):
        for seed in args.seeds:
            ns.seed = seed
            # Every grid of every evaluation goes to scratch; only the last one per strategy is kept.
            ns.plots = os.path.join(scratch, str(seed)) if experiment.save_grids else None
            per_seed[str(seed)] = {
                name: runner.run_strategy(name, benchmark, ns, config, N_CLASSES, reference,
                                          progress_bar=sys.stderr.isatty())
                for name in args.strategies}
            for name in args.strategies if experiment.save_grids else ():
                kept = _keep_last_grid(os.path.join(ns.plots, name),
                                       os.path.join(args.out_dir, f"{stem}_samples", f"{name}_seed{seed}.png"))
                if kept is not None:
                    grids.setdefault(name, {})[str(seed)] = os.path.relpath(kept, args.out_dir)
    summary = summarize(per_seed, experiment.metrics)
    payload = dict(experiment=experiment.name, title=experiment.title, command=command, config=config,
                   seeds=args.seeds, reference_classifier=common.reference_summary(reference),
                   per_seed=per_seed, summary=summary)
    if experiment.save_grids:
        payload["sample_grids"] = grids
    payload["wall_seconds"] = time.perf_counter() - started
    json_path, png_path = (os.path.join(args.out_dir, stem + ext) for ext in (".json", ".png"))
    common.write_json_atomic(json_path, payload)
    plot_summary(summary, experiment.metrics, f"{experiment.title} (seeds {','.join(map(str, args.seeds))})",
                 png_path)
    print(f"\n{experiment.title}: {args.n_experiences} experiences, {args.epochs} epoch(s) each, "
          f"seeds {','.join(map(str, args.seeds))}; mean ± std after the last experience")
    print(format_table(summary, per_seed, experiment.metrics))
    if experiment.paper:
        print(f"paper: {experiment.paper}")
    print(f"wrote {json_path} and {png_path} ({payload['wall_seconds']:.0f} s)")
    return payload


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run, from the repository root."""
    return shlex.join(["python", os.path.relpath(os.path.abspath(script), REPO)] + list(argv))


def run_cli(argv: Optional[Sequence[str]], script: str, experiment, add_arguments=None, description: str = "") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the experiment, return the exit code.

    0: done; 2: a bad flag, a missing dataset or a bad stream size (one
    ``error:`` line on stderr); 1: a training loss went non-finite.
    ``experiment`` is an :class:`Experiment`, or a function of the parsed
    flags returning one (it then depends on the script's own flags, e.g.
    ``--dataset``; it is called with None for the defaults ``--help`` shows).
    """
    from avalanche_lvae import NonFiniteLossError

    make_experiment = experiment if callable(experiment) else (lambda args: experiment)
    warnings.filterwarnings("ignore", message="No loggers specified")  # no logger is on purpose
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_line(script, argv)
    probe = make_experiment(None)  # the defaults shown by --help
    parser = build_parser(os.path.basename(script), description, probe, add_arguments)
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

