"""Speed and memory of LifelongVAEStrategy against the naive model and Avalanche's GenerativeReplay.

Everything is measured in one process, so the figures compare as ratios even
on a shared machine:

1. Seconds per epoch and real-data throughput at experiences 1, 3 and 5 of
   permuted MNIST for ``lvae`` (LifelongVAEStrategy, default
   ``replay_mixing="loss_weights"``: B real + B replayed rows per minibatch),
   ``lvae_composition`` (``replay_mixing="batch_composition"``: B rows, a
   share k/(k+1) of them replayed, as in the authors' code), ``naive`` (the
   same LifelongVAE and loss, no teacher: LVAENaive) and ``gr`` (Avalanche's
   GenerativeReplay over an MLP classifier of the same hidden sizes).
2. The share of an epoch spent loading data (the same DataLoader iterated
   alone) and the achieved GFLOP/s (FLOPs of one training iteration counted
   by ``torch.utils.flop_counter``) against a plain ``torch.matmul`` peak
   measured in the same run.
3. Peak and current RSS after each of 10 experiences of ``lvae``.

Usage::

    python benchmarks/speed.py             # writes benchmarks/results/speed.json
    python benchmarks/speed.py --quick     # a smoke run (small slices)
"""

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import time

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import SimpleMLP
from avalanche.training import GenerativeReplay
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from avalanche_lvae import LifelongVAE, LifelongVAEStrategy, LVAENaive  # noqa: E402
from avalanche_lvae.streams import permuted_mnist  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "speed.json")


class EpochTimer(SupervisedPlugin):
    """Wall seconds of every training epoch, and the FLOPs of one iteration per experience.

    Callbacks: ``before/after_training_epoch`` time the epoch;
    ``after_training_iteration`` opens a ``FlopCounterMode`` after the first
    iteration and closes it after the second, so exactly one whole iteration
    (replay generation, forward, regularisers, backward, step) is counted.
    """

    def __init__(self, count_flops=True):
        super().__init__()
        self.count_flops = count_flops
        self.epoch_seconds, self.iterations, self.flops = {}, {}, {}
        self._counter = None

    def before_training_epoch(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_training_epoch(self, strategy, **kwargs):
        exp = strategy.experience.current_experience
        self.epoch_seconds.setdefault(exp, []).append(time.perf_counter() - self._start)
        self.iterations[exp] = strategy.clock.train_epoch_iterations

    def after_training_iteration(self, strategy, **kwargs):
        exp, iteration = strategy.experience.current_experience, strategy.clock.train_epoch_iterations
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops[exp] = self._counter.get_total_flops()
            self._counter = None
        elif self.count_flops and iteration == 0 and exp not in self.flops and strategy.clock.train_exp_epochs == 0:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()


def matmul_peak_gflops(size=1024, repeats=20):
    """GFLOP/s of a plain float32 ``torch.matmul`` on this machine, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def loader_seconds(experience, batch_size):
    """Seconds to iterate an experience's training data once, as the strategies do."""
    start = time.perf_counter()
    for _ in DataLoader(experience.dataset.train(), batch_size=batch_size, shuffle=True):
        pass
    return time.perf_counter() - start


def build(name, n_experiences, batch_size, epochs, timer):
    """One strategy, seeded identically; ``gr`` is Avalanche's own GenerativeReplay."""
    RNGManager.set_random_seeds(0)
    common = dict(train_mb_size=batch_size, train_epochs=epochs, eval_mb_size=1000,
                  evaluator=EvaluationPlugin(loggers=[]), plugins=[timer])
    if name == "gr":
        model = SimpleMLP(num_classes=10, input_size=784, hidden_size=512, hidden_layers=2)
        return GenerativeReplay(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                                criterion=torch.nn.CrossEntropyLoss(), **common)
    lifelong = name.startswith("lvae")
    model = LifelongVAE(discrete_dim=1 if lifelong else n_experiences)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    if not lifelong:
        return LVAENaive(model=model, optimizer=optimizer, **common)
    mixing = "batch_composition" if name == "lvae_composition" else "loss_weights"
    return LifelongVAEStrategy(model=model, optimizer=optimizer, replay_mixing=mixing, **common)


def time_strategies(stream, batch_size, epochs, n_experiences):
    """Per-experience epoch seconds, throughput and GFLOP/s for naive, both lvae mixings and gr."""
    rows = {}
    for name in ("naive", "lvae", "lvae_composition", "gr"):
        timer = EpochTimer(count_flops=name != "gr")
        with contextlib.redirect_stdout(io.StringIO()):  # GR's generator logger binds stdout when built
            strategy = build(name, n_experiences, batch_size, epochs, timer)
        wall = []
        for exp in stream.train_stream:
            start = time.perf_counter()
            # GenerativeReplay's internal generator prints progress bars: keep the table readable.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                strategy.train(exp)
            wall.append(time.perf_counter() - start)
        per_exp = {}
        for exp_id, seconds in timer.epoch_seconds.items():
            epoch = sum(seconds) / len(seconds)
            n_real = len(stream.train_stream[exp_id].dataset)
            flops = timer.flops.get(exp_id)
            per_exp[exp_id + 1] = dict(
                seconds_per_epoch=epoch, real_samples_per_second=n_real / epoch,
                experience_wall_seconds=wall[exp_id],
                gflops_per_second=None if flops is None else flops * timer.iterations[exp_id] / epoch / 1e9,
            )
        rows[name] = per_exp
        print(f"  {name}: " + ", ".join(f"exp {k}: {v['seconds_per_epoch']:.1f}s/epoch" for k, v in per_exp.items()),
              flush=True)
    return rows


def memory_over_experiences(n_experiences, max_train, batch_size):
    """Peak and current RSS (MiB) after each experience of lvae, and the z_d parameter growth."""
    stream = permuted_mnist(n_experiences=n_experiences, max_train_per_experience=max_train,
                            max_test_per_experience=100)
    strategy = build("lvae", n_experiences, batch_size, 1, EpochTimer())
    model, page = strategy.model, os.sysconf("SC_PAGE_SIZE")
    records, start_params = [], sum(p.numel() for p in model.parameters())
    for exp in stream.train_stream:
        strategy.train(exp)
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * page / 2**20
        records.append(dict(experience=exp.current_experience + 1, discrete_dim=strategy.model.discrete_dim,
                            rss_mb=current, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                            parameters=sum(p.numel() for p in strategy.model.parameters())))
    growth_mb = (records[-1]["parameters"] - start_params) * 4 * 2 / 2**20  # student + teacher, float32
    return dict(per_experience=records, zd_parameter_growth_mb=growth_mb)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slices, for a smoke run")
    parser.add_argument("--max-train-per-experience", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    max_train = 1024 if args.quick else args.max_train_per_experience
    stream = permuted_mnist(n_experiences=5, max_train_per_experience=max_train, max_test_per_experience=100)

    peak = matmul_peak_gflops()
    loading = loader_seconds(stream.train_stream[0], args.batch_size)
    print(f"matmul peak {peak:.1f} GFLOP/s; one pass of the data loader {loading:.2f}s", flush=True)
    rows = time_strategies(stream, args.batch_size, args.epochs, 5)
    memory = memory_over_experiences(10, 512 if args.quick else 5000, args.batch_size)

    print("\nstrategy          exp  s/epoch  real samples/s  GFLOP/s  loader share  vs naive  experience wall s")
    for name, per_exp in rows.items():
        for exp_id in (1, 3, 5):
            r = per_exp[exp_id]
            ratio = r["seconds_per_epoch"] / rows["naive"][exp_id]["seconds_per_epoch"]
            gflops = "-" if r["gflops_per_second"] is None else f"{r['gflops_per_second']:.1f}"
            print(f"{name:17s} {exp_id:3d} {r['seconds_per_epoch']:8.2f} {r['real_samples_per_second']:15.0f} "
                  f"{gflops:>8s} {loading / r['seconds_per_epoch']:12.1%} {ratio:8.2f}x {r['experience_wall_seconds']:18.2f}")
    rss = [r["rss_mb"] for r in memory["per_experience"]]
    print(f"\nRSS after experience 1..10 (MiB): {', '.join(f'{v:.0f}' for v in rss)}; "
          f"z_d parameter growth {memory['zd_parameter_growth_mb']:.3f} MiB")

    payload = dict(command="python benchmarks/speed.py" + (" --quick" if args.quick else ""),
                   torch_threads=torch.get_num_threads(), matmul_peak_gflops=peak,
                   loader_seconds_per_pass=loading, batch_size=args.batch_size, epochs=args.epochs,
                   max_train_per_experience=max_train, strategies=rows, memory=memory)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
