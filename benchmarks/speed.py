"""Speed and memory of LifelongVAEStrategy against the naive model and Avalanche's GenerativeReplay.

Everything is measured in one process, so the figures compare as ratios even
on a shared machine:

1. Seconds per epoch and real-data throughput at experiences 1, 3 and 5 of
   permuted MNIST for ``lvae`` (LifelongVAEStrategy with its defaults,
   ``replay_mixing="batch_composition"``: B rows, a share k/(k+1) of them
   replayed, LGM Sec. 4 and the authors' code), ``lvae_loss_weights``
   (``replay_mixing="loss_weights"``: B real + B replayed rows), ``naive`` (the
   same LifelongVAE and loss, no teacher: LVAENaive) and ``gr`` (Avalanche's
   GenerativeReplay over an MLP classifier of the same hidden sizes), trained
   in lockstep (experience 1 of each, then experience 2 of each, ...) so that
   load changes on a shared machine hit all four alike.
2. The share of an epoch spent loading data (each strategy's loader iterated
   alone: Avalanche's for ``gr``, the pre-loaded one of the LVAE templates for
   the others) and the achieved GFLOP/s (FLOPs of one training iteration counted
   by ``torch.utils.flop_counter``) against a plain ``torch.matmul`` peak
   measured in the same run.
3. Peak and current RSS after each of 10 experiences of ``lvae``.
4. ``conv_vs_dense``: seconds per training step (forward, joint bound,
   backward, Adam step) on a 512-row minibatch of the conv LifelongVAE at
   ``conv_width`` 32 (LGM Eq. 14), 16 and 8, against the dense model, measured interleaved; the ratio
   to dense; the five most expensive operators of each conv step by ``torch.profiler``; and the final
   test accuracy and -ELBO of LifelongVAEStrategy with the dense model and each conv width whose ratio
   is at most ``QUALITY_MAX_RATIO`` on a 2-experience permuted MNIST slice (``--conv-train`` /
   ``--conv-test`` images per experience, ``--conv-epochs``).

Usage::

    python benchmarks/speed.py             # writes benchmarks/results/speed.json
    python benchmarks/speed.py --quick     # a smoke run (small slices)
    python benchmarks/speed.py --conv-only # only part 4, updating speed.json in place
"""

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import sys
import time

import torch
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from avalanche.core import SupervisedPlugin
from avalanche.models import SimpleMLP
from avalanche.training import GenerativeReplay
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAENaive
from avalanche_lvae.experiments.results import write_json_atomic
from avalanche_lvae.preloading import PreloadedTaskBalancedDataLoader
from avalanche_lvae.streams import permuted_mnist

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "speed.json")


class EpochTimer(SupervisedPlugin):
    """Wall seconds and real rows trained on of every epoch, and the FLOPs of one iteration per experience.

    Callbacks: ``before/after_training_epoch`` time the epoch;
    ``before_forward`` counts the real (not replayed) rows of the minibatch,
    so that batch composition, which drops k/(k+1) of each loaded minibatch,
    is credited only with the real images it trains on;
    ``after_training_iteration`` opens a ``FlopCounterMode`` after the first
    iteration and closes it after the second, so exactly one whole iteration
    (replay generation, forward, regularisers, backward, step) is counted.
    The counter slows that iteration down (about 2x), so its time is taken
    out of the epoch and replaced by the mean of the epoch's other iterations.
    """

    def __init__(self, count_flops=True):
        super().__init__()
        self.count_flops = count_flops
        self.epoch_seconds, self.iterations, self.flops, self.real_rows = {}, {}, {}, {}
        self._counter = None

    def before_training_epoch(self, strategy, **kwargs):
        self._real_rows, self._counted_seconds = 0, 0.0
        self._start = time.perf_counter()

    def before_forward(self, strategy, **kwargs):
        replay = getattr(strategy, "replay_batch", None)  # None for gr: its rows are counted from the dataset
        self._real_rows += strategy.mb_x.shape[0] if replay is None else replay.num_real

    def after_training_epoch(self, strategy, **kwargs):
        exp, iterations = strategy.experience.current_experience, strategy.clock.train_epoch_iterations
        seconds = time.perf_counter() - self._start
        if self._counted_seconds and iterations > 1:
            seconds = (seconds - self._counted_seconds) * iterations / (iterations - 1)
        self.epoch_seconds.setdefault(exp, []).append(seconds)
        self.iterations[exp] = iterations
        self.real_rows[exp] = self._real_rows

    def after_training_iteration(self, strategy, **kwargs):
        exp, iteration = strategy.experience.current_experience, strategy.clock.train_epoch_iterations
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops[exp] = self._counter.get_total_flops()
            self._counter = None
            self._counted_seconds = time.perf_counter() - self._counter_start
        elif self.count_flops and iteration == 0 and exp not in self.flops and strategy.clock.train_exp_epochs == 0:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
            self._counter_start = time.perf_counter()


def matmul_peak_gflops(size=1024, repeats=20):
    """GFLOP/s of a plain float32 ``torch.matmul`` on this machine, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def loader_seconds(experience, batch_size):
    """Seconds to iterate an experience's training data once, with each strategy's loader.

    ``avalanche``: Avalanche's ``TaskBalancedDataLoader`` (what ``gr`` uses:
    every sample fetched through the dataset tree). ``preloaded``: the LVAE
    templates' :class:`PreloadedTaskBalancedDataLoader`, per epoch, and
    ``preloaded_read`` its one-time read of the experience (which replaces
    the templates' former validation pass over the data).
    """
    data = experience.dataset.train()
    timings = {}
    for name, loader_class in (("avalanche", TaskBalancedDataLoader), ("preloaded", PreloadedTaskBalancedDataLoader)):
        start = time.perf_counter()
        loader = loader_class(data, oversample_small_groups=True, batch_size=batch_size, shuffle=True)
        built = time.perf_counter()
        for _ in loader:
            pass
        timings[name] = time.perf_counter() - built
        if name == "preloaded":
            timings["preloaded_read"] = built - start
    return timings


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
    options = dict(replay_mixing="loss_weights") if name == "lvae_loss_weights" else {}
    return LifelongVAEStrategy(model=model, optimizer=optimizer, **options, **common)


def time_strategies(stream, batch_size, epochs, n_experiences, repeats):
    """Per-experience epoch seconds, throughput and GFLOP/s for naive, both lvae mixings and gr.

    The strategies are trained in lockstep -- experience 1 of each, then
    experience 2 of each, ... -- so that a change in the machine's load during
    the run hits all of them alike and the ratios stay comparable. The whole
    lockstep run is repeated ``repeats`` times with fresh strategies; each
    figure is the median over the repeats (all repeats are kept in the JSON).
    """
    runs = [_time_once(stream, batch_size, epochs, n_experiences) for _ in range(repeats)]
    rows = {}
    for name, first in runs[0].items():
        rows[name] = {}
        for exp_id in first:
            per_run = [run[name][exp_id] for run in runs]
            epoch = statistics.median(r["seconds_per_epoch"] for r in per_run)
            n_real, flops = first[exp_id]["real_samples_per_epoch"], first[exp_id]["flops_per_epoch"]
            rows[name][exp_id] = dict(
                seconds_per_epoch=epoch, real_samples_per_epoch=n_real, real_samples_per_second=n_real / epoch,
                experience_wall_seconds=statistics.median(r["experience_wall_seconds"] for r in per_run),
                gflops_per_second=None if flops is None else flops / epoch / 1e9,
                repeats=per_run,
            )
        print(f"  {name}: " + ", ".join(f"exp {k}: {v['seconds_per_epoch']:.2f}s/epoch" for k, v in rows[name].items()),
              flush=True)
    return rows


def _time_once(stream, batch_size, epochs, n_experiences):
    """One lockstep run: per strategy and experience, epoch seconds, real rows, FLOPs per epoch and wall seconds."""
    names = ("naive", "lvae", "lvae_loss_weights", "gr")
    timers = {name: EpochTimer(count_flops=name != "gr") for name in names}
    strategies = {}
    for name in names:
        with contextlib.redirect_stdout(io.StringIO()):  # GR's generator logger binds stdout when built
            strategies[name] = build(name, n_experiences, batch_size, epochs, timers[name])
    wall = {name: [] for name in names}
    for exp in stream.train_stream:
        for name in names:
            start = time.perf_counter()
            # GenerativeReplay's internal generator prints progress bars: keep the table readable.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                strategies[name].train(exp)
            wall[name].append(time.perf_counter() - start)
    rows = {}
    for name in names:
        timer, per_exp = timers[name], {}
        for exp_id, seconds in timer.epoch_seconds.items():
            epoch = sum(seconds) / len(seconds)
            n_real = len(stream.train_stream[exp_id].dataset) if name == "gr" else timer.real_rows[exp_id]
            flops = timer.flops.get(exp_id)
            per_exp[exp_id + 1] = dict(
                seconds_per_epoch=epoch, real_samples_per_epoch=n_real, experience_wall_seconds=wall[name][exp_id],
                flops_per_epoch=None if flops is None else flops * timer.iterations[exp_id],
            )
        rows[name] = per_exp
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


CONV_WIDTHS = (32, 16, 8)
# Issue target: a conv step at most 10x dense; widths up to 1.5x that are trained too (the ratio is noisy).
QUALITY_MAX_RATIO = 15.0


def _training_step(model, x, y):
    """One closure running a full training step of ``model`` on (x, y)."""
    optimizer, criterion = torch.optim.Adam(model.parameters(), 1e-3), JointBoundLoss()

    def step():
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    return step


def conv_vs_dense(batch_size=512, repeats=3):
    """Seconds per training step of the conv LifelongVAE (per ``CONV_WIDTHS``) and of the dense one.

    The models step in turn, ``repeats`` rounds, so that load changes hit all
    alike; each figure is the median over the rounds. Also profiles one step
    of each conv width (top 5 operators by self CPU time).
    """
    torch.manual_seed(0)
    x, y = torch.rand(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    models = {"dense": LifelongVAE()}
    models.update({f"conv_w{w}": LifelongVAE(arch="conv", conv_width=w) for w in CONV_WIDTHS})
    steps = {name: _training_step(model, x, y) for name, model in models.items()}
    for step in steps.values():  # warm-up (allocations, oneDNN primitive creation)
        step()
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    dense = statistics.median(seconds["dense"])
    rows = {}
    for name, model in models.items():
        median = statistics.median(seconds[name])
        rows[name] = dict(seconds_per_step=median, ratio_to_dense=median / dense, all_seconds=seconds[name],
                          parameters=sum(p.numel() for p in model.parameters()))
        if name != "dense":
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[name]()
            top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
            rows[name]["profile_top5_self_cpu_ms"] = {e.key: e.self_cpu_time_total / 1e3 for e in top}
        print(f"  {name:8s} {median * 1e3:8.1f} ms/step  {median / dense:6.1f}x dense", flush=True)
    return dict(batch_size=batch_size, repeats=repeats, models=rows)


def conv_permuted_mnist(train, test, epochs, widths, batch_size=256):
    """Final test accuracy and -ELBO (nats) of LifelongVAEStrategy with dense and conv models, 2 experiences."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche_lvae.metrics import neg_elbo_metrics
    stream = permuted_mnist(n_experiences=2, max_train_per_experience=train, max_test_per_experience=test)
    rows = {}
    for name, kwargs in [("dense", {})] + [(f"conv_w{w}", dict(arch="conv", conv_width=w)) for w in widths]:
        RNGManager.set_random_seeds(0)
        model = LifelongVAE(**kwargs)
        strategy = LifelongVAEStrategy(
            model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3), train_mb_size=batch_size,
            train_epochs=epochs, eval_mb_size=500,
            evaluator=EvaluationPlugin(accuracy_metrics(stream=True), neg_elbo_metrics(experience=False), loggers=[]))
        start = time.perf_counter()
        for experience in stream.train_stream:
            strategy.train(experience)
        seconds = time.perf_counter() - start
        metrics = strategy.eval(stream.test_stream)
        pick = lambda prefix: next(v for k, v in metrics.items() if k.startswith(prefix))  # noqa: E731
        rows[name] = dict(accuracy=pick("Top1_Acc_Stream"), neg_elbo=pick("NegELBO_Stream"), train_seconds=seconds)
        print(f"  {name:8s} accuracy {rows[name]['accuracy']:.3f}  -ELBO {rows[name]['neg_elbo']:.1f} nats  "
              f"({seconds:.0f}s)", flush=True)
    return dict(train_per_experience=train, test_per_experience=test, epochs=epochs, batch_size=batch_size,
                strategy="LifelongVAEStrategy defaults, JointBoundLoss()", seed=0, models=rows)


def _write(payload, output):
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_json_atomic(output, payload)
    print(f"wrote {output}")


def _conv_part(args, repeats, command):
    print("\ntraining step, 512 rows:")
    conv = dict(conv_vs_dense(repeats=repeats), command=command, torch_threads=torch.get_num_threads(),
                quality_max_ratio=QUALITY_MAX_RATIO)
    print(f"2-experience permuted MNIST, {args.conv_train}/{args.conv_test} train/test images per experience, "
          f"{args.conv_epochs} epoch(s):")
    widths = [w for w in CONV_WIDTHS if conv["models"][f"conv_w{w}"]["ratio_to_dense"] <= QUALITY_MAX_RATIO]
    conv["permuted_mnist"] = conv_permuted_mnist(args.conv_train, args.conv_test, args.conv_epochs, widths)
    return conv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slices, for a smoke run")
    parser.add_argument("--max-train-per-experience", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="lockstep runs; figures are their medians")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--conv-only", action="store_true",
                        help="only the conv-vs-dense part (4.); updates that entry of --output in place")
    parser.add_argument("--conv-train", type=int, default=6000, help="training images per experience in 4.")
    parser.add_argument("--conv-test", type=int, default=2000, help="test images per experience in 4.")
    parser.add_argument("--conv-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/speed.py"] + list(sys.argv[1:] if argv is None else argv))
    if args.quick:
        args.conv_train, args.conv_test, args.conv_epochs = 512, 256, 1
    if args.conv_only:
        conv = _conv_part(args, 1 if args.quick else args.repeats, command)
        payload = {}
        if os.path.exists(args.output):
            with open(args.output) as f:
                payload = json.load(f)
        payload["conv_vs_dense"] = conv
        _write(payload, args.output)
        return
    max_train = 1024 if args.quick else args.max_train_per_experience
    stream = permuted_mnist(n_experiences=5, max_train_per_experience=max_train, max_test_per_experience=100)

    peak = matmul_peak_gflops()
    loading = loader_seconds(stream.train_stream[0], args.batch_size)
    print(f"matmul peak {peak:.1f} GFLOP/s; one pass of the data: Avalanche's loader {loading['avalanche']:.2f}s, "
          f"pre-loaded {loading['preloaded']:.3f}s (after a one-time read of {loading['preloaded_read']:.2f}s)",
          flush=True)
    repeats = 1 if args.quick else args.repeats
    rows = time_strategies(stream, args.batch_size, args.epochs, 5, repeats)
    memory = memory_over_experiences(10, 512 if args.quick else 5000, args.batch_size)

    print("\nstrategy           exp  s/epoch  real rows/epoch  real samples/s  GFLOP/s  loader share  vs naive  "
          "experience wall s")
    for name, per_exp in rows.items():
        for exp_id in (1, 3, 5):
            r = per_exp[exp_id]
            ratio = r["seconds_per_epoch"] / rows["naive"][exp_id]["seconds_per_epoch"]
            gflops = "-" if r["gflops_per_second"] is None else f"{r['gflops_per_second']:.1f}"
            loader = loading["avalanche" if name == "gr" else "preloaded"]
            print(f"{name:18s} {exp_id:3d} {r['seconds_per_epoch']:8.2f} {r['real_samples_per_epoch']:16d} "
                  f"{r['real_samples_per_second']:15.0f} "
                  f"{gflops:>8s} {loader / r['seconds_per_epoch']:12.1%} {ratio:8.2f}x "
                  f"{r['experience_wall_seconds']:18.2f}")
    rss = [r["rss_mb"] for r in memory["per_experience"]]
    print(f"\nRSS after experience 1..10 (MiB): {', '.join(f'{v:.0f}' for v in rss)}; "
          f"z_d parameter growth {memory['zd_parameter_growth_mb']:.3f} MiB")

    conv = _conv_part(args, repeats, command)
    payload = dict(command=command,
                   torch_threads=torch.get_num_threads(), matmul_peak_gflops=peak,
                   loader_seconds_per_pass=loading, interleaved=True, batch_size=args.batch_size, epochs=args.epochs,
                   repeats=repeats,
                   max_train_per_experience=max_train, strategies=rows, memory=memory, conv_vs_dense=conv)
    _write(payload, args.output)


if __name__ == "__main__":
    main()
