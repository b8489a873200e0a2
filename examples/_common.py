"""Entry point shared by the example scripts: run every strategy, print the table, write the results.

``permuted_mnist.py`` and ``split_fmnist.py`` differ only in the benchmark they
build and a few defaults; the rest is split over small modules:

- ``_cli.py``: the flags and their checks (exit code 2, one ``error:`` line);
- ``_strategies.py``: the strategy zoo and the metrics of each strategy;
- ``_runner.py``: train / evaluate / checkpoint one strategy;
- ``_checkpoints.py``: atomic per-experience checkpoints and resuming;
- ``_plots.py``: ``--plots`` PNGs;
- this module: :func:`run_cli`, the reference classifier of the Frechet
  distance, the table and the results JSON.

``--results-json`` gets::

    {"benchmark": "permuted_mnist" | "split_fmnist",
     "config": {every flag},
     "reference_classifier": null | {"name", "test_accuracy", "test_accuracy_per_experience",
                                     "epochs", "n_train", "train_seconds", "cache_file"},
     "results": {STRATEGY: {
        "final_avg_accuracy": float,          # Top1_Acc_Stream after the last experience
        "final_avg_forgetting": float,        # StreamForgetting after the last experience
        "avg_accuracy_per_experience": [float],  # Top1_Acc_Stream over the seen tests, after each exp
        "accuracy_per_experience": [[acc on exp j after training exp i, j <= i] for i],
        "final_neg_elbo": float | null,       # NegELBO_Stream (nats/image, seen test sets); null for gr/lwf/si
        "neg_elbo_per_experience": [float] | null,
        "final_frechet_distance": float | null,  # FrechetDistance_Stream; null for gr/lwf/si and --no-frechet
        "frechet_distance_per_experience": [float] | null,
        "final_component_purity": float | null,  # ComponentPurity_Stream (lvae only; needs the reference)
        "component_purity_per_experience": [float] | null,
        "final_component_purity_per_row": [float] | null,  # last evaluation, one value per grid row (z_d value)
        "component_purity_per_row_per_experience": [[float]] | null,  # the same after each experience
        "train_seconds": float,               # wall time inside strategy.train() only (summed over resumes)
        "peak_rss_mb": float,                 # process peak so far (includes earlier strategies)
        "resumed_after_experience": int | null}}}  # the checkpoint this run resumed from, if any

The Frechet distance uses a reference classifier trained on all training data
of the stream (``avalanche_lvae.metrics.reference_classifier``), cached in
``benchmarks/results/cache/reference_<name>_seed<seed>.pt`` (or
``$LVAE_CACHE_DIR``); ``<name>`` identifies the data: ``permuted_mnist5`` for
the full stream, ``permuted_mnist5_train2000`` with
``--max-train-per-experience 2000``. The cache key does not include the
training epochs: a cached file is reused whatever it was trained with (its
epochs are printed and stored in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from typing import Callable, Dict, Optional, Sequence

try:  # imported as a package module (examples._common)
    from . import _cli
    from ._cli import GENERATIVE, STRATEGIES, build_parser  # noqa: F401  (re-exported for the scripts)
except ImportError:  # examples/ is on sys.path
    import _cli
    from _cli import GENERATIVE, STRATEGIES, build_parser  # noqa: F401


def reference_name(benchmark_name: str, args: argparse.Namespace) -> str:
    """Cache name of the reference classifier: it must identify the training data (the seed is added by the cache)."""
    name = f"{benchmark_name}{args.n_experiences}"
    if args.max_train_per_experience is not None:
        name += f"_train{args.max_train_per_experience}"
    return name


def build_reference(benchmark_name: str, benchmark, args: argparse.Namespace, epochs: int):
    """The reference classifier of the Frechet distance: loaded from its cache file, or trained once.

    ``epochs`` is chosen per benchmark to keep a first run on a fresh machine
    short (about 100 s on one core for the full data).
    """
    from avalanche_lvae.metrics import reference_classifier

    ref = reference_classifier(reference_name(benchmark_name, args), benchmark.train_stream, benchmark.test_stream,
                               seed=args.seed, epochs=epochs, device=args.device)
    meta = ref.metadata
    print(f"reference classifier {meta['benchmark_name']}: {os.path.basename(meta['cache_path'])} "
          f"({meta['epochs']} epoch(s), test accuracy {meta['test_accuracy']:.4f})")
    return ref


def reference_summary(ref) -> Optional[dict]:
    if ref is None:
        return None
    meta = ref.metadata
    keys = ("test_accuracy", "test_accuracy_per_experience", "epochs", "n_train", "train_seconds")
    return dict(name=meta["benchmark_name"], cache_file=os.path.basename(meta["cache_path"]),
                **{k: meta.get(k) for k in keys})


def format_table(results: Dict[str, dict]) -> str:
    head = (f"{'strategy':<11} {'avg acc':>8} {'forgetting':>10} {'-ELBO':>8} {'FD':>8} "
            f"{'train s':>9} {'peak MB':>8}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        elbo = "-" if r["final_neg_elbo"] is None else f"{r['final_neg_elbo']:.1f}"
        fd = "-" if r["final_frechet_distance"] is None else f"{r['final_frechet_distance']:.2f}"
        lines.append(f"{name:<11} {r['final_avg_accuracy']:>8.4f} {r['final_avg_forgetting']:>10.4f} "
                     f"{elbo:>8} {fd:>8} {r['train_seconds']:>9.1f} {r['peak_rss_mb']:>8.0f}")
    return "\n".join(lines)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_cli(argv: Optional[Sequence[str]], parser: argparse.ArgumentParser, benchmark_name: str,
            make_benchmark: Callable[[argparse.Namespace], object], n_classes: int = 10,
            reference_epochs: int = 1) -> int:
    """Parse ``argv``, run every strategy, print the table, write the JSON (and plots); return the exit code.

    Never raises ``SystemExit``: ``--help`` returns 0; bad flags return 2
    (one ``error:`` line); a ``ValueError`` / ``FileNotFoundError`` from the
    package (bad sizes, missing dataset) or an unusable checkpoint returns 2
    with one ``error: ...`` line; a non-finite training loss returns 1 (a
    training failure: the last checkpoint is left as it was). Nothing is
    written to ``--results-json`` unless every strategy finished.
    """
    # Two import/setup-time warnings that say nothing about this run.
    warnings.filterwarnings("ignore", message="no QP solver found")  # avalanche's GEM import
    warnings.filterwarnings("ignore", message="No loggers specified")  # no logger is on purpose
    try:
        args = parser.parse_args(argv)
        _cli.check_args(parser, args)
    except SystemExit as exc:  # argparse: --help (0) or parser.error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        from ._checkpoints import CheckpointError
        from ._runner import run_strategy
    except ImportError:
        from _checkpoints import CheckpointError
        from _runner import run_strategy
    from avalanche_lvae import NonFiniteLossError

    config = dict(vars(args))
    try:
        benchmark = make_benchmark(args)
        reference = None
        if not args.no_frechet and any(name in GENERATIVE for name in args.strategies):
            reference = build_reference(benchmark_name, benchmark, args, reference_epochs)
        results = {name: run_strategy(name, benchmark, args, config, n_classes, reference)
                   for name in args.strategies}
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{benchmark_name}: {args.n_experiences} experiences, {args.epochs} epoch(s) each, seed {args.seed}")
    print(format_table(results))
    if args.results_json:
        write_json_atomic(args.results_json, {"benchmark": benchmark_name, "config": config,
                                              "reference_classifier": reference_summary(reference),
                                              "results": results})
        print(f"results written to {args.results_json}")
    if args.plots:
        try:
            from ._plots import write_plots
        except ImportError:
            from _plots import write_plots
        written = write_plots(args.plots, benchmark_name, results)
        print(f"{len(written)} plot(s) written to {args.plots}")
    return 0
