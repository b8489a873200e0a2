"""A long lifelong run: 20 experiences of permuted MNIST on small slices.

Checks what only shows after many teacher swaps:

- every loss term of every iteration is finite (exit code 1 otherwise);
- the time of one training step (real minibatch + teacher replay + the
  regularisers) stays flat as the number of past distributions k grows: the
  batch composition keeps the per-iteration cost constant (docs/method.md);
- z_d grows to one value per experience, the process RSS stays flat;
- accuracy and negative ELBO over all seen test sets, for the record.

Usage (single thread, about 3 minutes)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/long_run.py
    ... --experiences 20 --train 2000 --test 500 --batch-size 128 --epochs 2   # the defaults

Not part of the test suite (too slow); prints one row per experience and a summary.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.metrics import neg_elbo_metrics
from avalanche_lvae.streams import permuted_mnist

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "long_run.json")


class StepMonitor(SupervisedPlugin):
    """Wall time of every training iteration, and a finiteness check of every loss term.

    The strategy's own guard raises ``NonFiniteLossError`` before a bad
    update; this records the terms as well, so that a non-finite value that
    the guard does not see (e.g. in a logged term) is reported too.
    """

    def __init__(self):
        super().__init__()
        self.step_seconds, self.non_finite = [], []
        self._start = 0.0

    def before_training_exp(self, strategy, **kwargs):
        self.step_seconds = []

    def before_training_iteration(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        self.step_seconds.append(time.perf_counter() - self._start)
        terms = {"total": strategy.loss.detach(), **{k: v.detach() for k, v in strategy.loss_terms.items()}}
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
        if bad:
            self.non_finite.append((strategy.clock.train_exp_counter, strategy.clock.train_exp_iterations, bad))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiences", type=int, default=20)
    parser.add_argument("--train", type=int, default=2000, help="training images per experience")
    parser.add_argument("--test", type=int, default=500, help="test images per experience")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=RESULTS, help="where to write the per-experience figures")
    args = parser.parse_args(argv)

    bm = permuted_mnist(n_experiences=args.experiences, seed=args.seed, max_train_per_experience=args.train,
                        max_test_per_experience=args.test)
    RNGManager.set_random_seeds(args.seed)
    model = LifelongVAE()
    monitor = StepMonitor()
    strategy = LifelongVAEStrategy(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=args.batch_size,
        train_epochs=args.epochs, eval_mb_size=500, plugins=[monitor],
        replay_mixing="loss_weights",  # long_run.json was measured with it: the costlier of the two mixings
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), neg_elbo_metrics(experience=False), loggers=[]))
    rows, started = [], time.perf_counter()
    print(f"{'exp':>3} {'J':>3} {'iters':>5} {'step ms':>8} {'p90 ms':>7} {'train s':>7} {'acc':>6} "
          f"{'-ELBO':>7} {'RSS MB':>7}")
    for i, experience in enumerate(bm.train_stream):
        began = time.perf_counter()
        strategy.train(experience)
        train_s = time.perf_counter() - began
        metrics = strategy.eval(bm.test_stream[: i + 1])
        steps = sorted(monitor.step_seconds)
        row = dict(experience=i, discrete_dim=strategy.model.discrete_dim, iterations=len(steps),
                   step_ms_mean=1000 * statistics.mean(steps), step_ms_p90=1000 * steps[int(0.9 * (len(steps) - 1))],
                   train_seconds=train_s,
                   accuracy=metrics["Top1_Acc_Stream/eval_phase/test_stream/Task000"],
                   neg_elbo=metrics["NegELBO_Stream/eval_phase/test_stream/Task000"],
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        rows.append(row)
        print(f"{i:>3} {row['discrete_dim']:>3} {row['iterations']:>5} {row['step_ms_mean']:>8.1f} "
              f"{row['step_ms_p90']:>7.1f} {train_s:>7.2f} {row['accuracy']:>6.3f} {row['neg_elbo']:>7.1f} "
              f"{row['peak_rss_mb']:>7.0f}", flush=True)

    # Steady state with a teacher: experiences 1-5 against the last five.
    early = statistics.mean(r["step_ms_mean"] for r in rows[1:6])
    late = statistics.mean(r["step_ms_mean"] for r in rows[-5:])
    summary = dict(
        total_seconds=time.perf_counter() - started,
        step_ms_first_experience=rows[0]["step_ms_mean"],
        step_ms_experiences_1_to_5=early,
        step_ms_last_5=late,
        late_over_early=late / early,
        rss_growth_mb_after_exp1=rows[-1]["peak_rss_mb"] - rows[1]["peak_rss_mb"],
        non_finite=monitor.non_finite,
        all_finite=not monitor.non_finite and all(math.isfinite(r["neg_elbo"]) for r in rows),
    )
    print(json.dumps(summary, indent=2))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(config=vars(args), summary=summary, experiences=rows), f, indent=2)
    return 0 if summary["all_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
