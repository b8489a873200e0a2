"""Task-free lifelong training: the strategy finds the distribution boundaries itself.

For each stream the same LifelongVAE (same seed, same minibatch order) is trained twice:

- ``detected``: ``LifelongVAEStrategy(boundaries=BoundaryDetectionPlugin(...))``
  fed without boundary information, either as Avalanche's online stream
  (``split_online_stream``, experiences of ``--online-size`` rows, no task
  boundaries) or as all experiences merged into one (``--feed merged``),
  read in order;
- ``given``: the default strategy, one experience per distribution.

Both read every training row once (one epoch; ``shuffle=False``, so the
boundaries sit at known row indices). Recorded per stream: every detection
(row index at the decision, oldest buffered row, outcome), the true
boundaries, recall and precision (a swap within ``--window`` rows after a
true boundary is a hit; each boundary is matched once), the number of z_d
values grown, and the final average test accuracy of both runs.

Streams: ``split_mnist`` (class-incremental 5 x 2, fed online) and
``permuted_mnist`` (5 tasks, fed merged) are the tested ones;
``split_fmnist`` (5 x 2), ``mnist_fashion`` (MNIST -> FashionMNIST) and
``fmnist_iid`` (FashionMNIST alone, five times the rows per experience:
no boundary, any swap is false) are
where the detector's defaults were chosen, at
``--calibration-max-train-per-experience`` rows per experience. Each
training experience is shuffled once (``--seed``), because Avalanche's
class-incremental experiences hold their classes one after the other.

Usage (from the repository root, one thread)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/task_free.py --max-train-per-experience 3000

writes ``benchmarks/results/task_free.json``.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.plugins import BoundaryDetectionPlugin
from avalanche_lvae.streams import (
    benchmark_from_tensors, experience_tensors, mnist_fashion_permuted, permuted_mnist, split_fmnist, split_mnist,
)

REPO = Path(__file__).resolve().parents[1]
TESTED = ("split_mnist", "permuted_mnist")
CALIBRATION = ("split_fmnist", "mnist_fashion", "fmnist_iid")


def build_stream(name: str, n_train: int, n_test: int, seed: int = 0):
    """The stream as tensors: ``(train, test)`` lists of ``(x, y)``, one per distribution.

    Avalanche's class-incremental experiences hold their classes one after the
    other; each training experience is shuffled here (generator ``seed``), so
    that a distribution is i.i.d. and the only boundaries are between experiences.
    """
    sizes = dict(max_train_per_experience=n_train, max_test_per_experience=n_test)
    if name == "split_mnist":
        benchmark = split_mnist(n_experiences=5, fixed_class_order=list(range(10)), **sizes)
    elif name == "split_fmnist":
        benchmark = split_fmnist(n_experiences=5, fixed_class_order=list(range(10)), **sizes)
    elif name == "permuted_mnist":
        benchmark = permuted_mnist(n_experiences=5, **sizes)
    elif name in ("mnist_fashion", "fmnist_iid"):
        if name == "fmnist_iid":  # as long as the five-distribution streams
            sizes["max_train_per_experience"] = 5 * n_train
        benchmark = mnist_fashion_permuted(**sizes)  # MNIST, FashionMNIST, permuted MNIST
    else:
        raise ValueError(f"unknown stream {name!r}; choose from {TESTED + CALIBRATION}.")
    train = [experience_tensors(e) for e in benchmark.train_stream]
    test = [experience_tensors(e) for e in benchmark.test_stream]
    if name == "mnist_fashion":
        train, test = train[:2], test[:2]
    elif name == "fmnist_iid":
        train, test = train[1:2], test[1:2]
    generator = torch.Generator().manual_seed(seed)
    train = [(x[order], y[order]) for x, y in train for order in [torch.randperm(len(y), generator=generator)]]
    return train, test


def make_strategy(args, boundaries, seed: int):
    torch.manual_seed(seed)
    model = LifelongVAE(hidden_dim=args.hidden_dim)
    return LifelongVAEStrategy(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=args.lr), boundaries=boundaries,
        train_mb_size=args.batch_size, train_epochs=1, eval_mb_size=1000, evaluator=EvaluationPlugin(loggers=[]),
    )


def detector(args) -> BoundaryDetectionPlugin:
    return BoundaryDetectionPlugin(
        z_threshold=args.z_threshold, buffer_size=args.buffer_size, window=args.buffer_window,
        burn_in=args.burn_in, wait=args.wait, max_distributions=args.max_distributions,
        stats_horizon=args.stats_horizon, score=args.score,
    )


def test_accuracy(model, test_sets) -> list:
    model.eval()
    with torch.no_grad():
        return [float((model(x).class_logits.argmax(-1) == y).float().mean()) for x, y in test_sets]


def boundary_scores(swaps, true_boundaries, window: int) -> dict:
    """Match each true boundary to the first unmatched swap in [b, b + window); the rest are false."""
    unmatched, hits = list(swaps), 0
    for b in true_boundaries:
        match = next((d for d in unmatched if b <= d < b + window), None)
        if match is not None:
            unmatched.remove(match)
            hits += 1
    return {
        "recall": hits / len(true_boundaries) if true_boundaries else None,
        "precision": hits / len(swaps) if swaps else None,
        "false_detections": len(unmatched),
        "missed": len(true_boundaries) - hits,
    }


def run_stream(name: str, args, seed: int) -> dict:
    """Train the detected and the given run of one stream for one seed (model weights and row order)."""
    n_train = args.max_train_per_experience if name in TESTED else args.calibration_max_train_per_experience
    train_sets, test_sets = build_stream(name, n_train, args.max_test_per_experience, seed)
    benchmark = benchmark_from_tensors(train_sets, test_sets)
    true_boundaries, total = [], 0
    for x, _ in train_sets[:-1]:
        total += len(x)
        true_boundaries.append(total)

    start = time.time()
    plugin = detector(args)
    strategy = make_strategy(args, plugin, seed)
    if args.feed == "online":
        for experience in split_online_stream(benchmark.train_stream, experience_size=args.online_size, shuffle=False):
            strategy.train(experience, shuffle=False)
    else:
        merged = benchmark_from_tensors([tuple(torch.cat(parts) for parts in zip(*train_sets))], test_sets[:1])
        strategy.train(merged.train_stream[0], shuffle=False)
    detected_acc = test_accuracy(strategy.model, test_sets)
    detected_seconds = time.time() - start
    swaps = [d.sample_index for d in plugin.detections if d.outcome == "swap"]
    detected = {
        "detections": [d.as_dict() for d in plugin.detections],
        "swaps": swaps,
        "z_d_grown": strategy.model.discrete_dim - 1,
        **boundary_scores(swaps, true_boundaries, args.window),
        "accuracy_per_experience": detected_acc,
        "average_accuracy": sum(detected_acc) / len(detected_acc),
        "wall_seconds": detected_seconds,
    }

    start = time.time()
    strategy = make_strategy(args, "given", seed)
    for experience in benchmark.train_stream:
        strategy.train(experience, shuffle=False)
    given_acc = test_accuracy(strategy.model, test_sets)
    given = {"z_d_grown": strategy.model.discrete_dim - 1, "accuracy_per_experience": given_acc,
             "average_accuracy": sum(given_acc) / len(given_acc), "wall_seconds": time.time() - start}
    return {
        "role": "tested" if name in TESTED else "calibration",
        "train_rows_per_experience": len(train_sets[0][0]),
        "true_boundaries": true_boundaries,
        "stream_rows": total + len(train_sets[-1][0]),
        "detected": detected,
        "given": given,
        "accuracy_gap": given["average_accuracy"] - detected["average_accuracy"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", default=list(TESTED), choices=TESTED + CALIBRATION)
    parser.add_argument("--feed", choices=("online", "merged"), default=None,
                        help="how rows arrive in the detected run; default: online for split streams, merged otherwise")
    parser.add_argument("--max-train-per-experience", type=int, default=3000)
    parser.add_argument("--calibration-max-train-per-experience", type=int, default=3000,
                        help="the same for the calibration streams (the size the defaults were chosen at)")
    parser.add_argument("--max-test-per-experience", type=int, default=1000)
    parser.add_argument("--online-size", type=int, default=128, help="rows per online experience")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--window", type=int, default=1000, help="a swap within this many rows after a true "
                                                                 "boundary detects it")
    defaults = BoundaryDetectionPlugin()
    parser.add_argument("--z-threshold", type=float, default=defaults.z_threshold)
    parser.add_argument("--buffer-size", type=int, default=defaults.buffer_size)
    parser.add_argument("--buffer-window", type=int, default=defaults.window)
    parser.add_argument("--burn-in", type=int, default=defaults.burn_in)
    parser.add_argument("--wait", type=int, default=defaults.wait)
    parser.add_argument("--max-distributions", type=int, default=defaults.max_distributions)
    parser.add_argument("--stats-horizon", type=int, default=defaults.stats_horizon)
    parser.add_argument("--score", choices=("joint", "elbo"), default="joint")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "task_free.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results = {}
    for name in args.streams:
        feed = args.feed or ("online" if name.startswith("split") else "merged")
        run_args = argparse.Namespace(**{**vars(args), "feed": feed})
        per_seed = {}
        for seed in args.seeds:
            run = per_seed[str(seed)] = run_stream(name, run_args, seed)
            d = run["detected"]
            print(f"{name} ({feed}) seed {seed}: true {run['true_boundaries']} swaps {d['swaps']} recall {d['recall']} "
                  f"precision {d['precision']} acc detected {d['average_accuracy']:.3f} "
                  f"given {run['given']['average_accuracy']:.3f}", flush=True)
        first = per_seed[str(args.seeds[0])]
        results[name] = {
            "feed": feed,
            **{key: first[key] for key in ("role", "train_rows_per_experience", "true_boundaries", "stream_rows")},
            "summary": {key: [run["detected"][key] for run in per_seed.values()]
                        for key in ("recall", "precision", "false_detections", "missed", "z_d_grown")}
            | {"accuracy_detected": [run["detected"]["average_accuracy"] for run in per_seed.values()],
               "accuracy_given": [run["given"]["average_accuracy"] for run in per_seed.values()],
               "accuracy_gap": [run["accuracy_gap"] for run in per_seed.values()]},
            "per_seed": per_seed,
        }
    config = {k: v for k, v in vars(args).items() if k != "out"}
    out = {"command": "python benchmarks/task_free.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "config": config, "streams": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
