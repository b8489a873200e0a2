"""Throughput of LifelongVAEStrategy in 1 and N processes (Avalanche's DistributedHelper, gloo on CPU).

For each architecture and process count, a fresh run of permuted MNIST
(``--experiences`` experiences of ``--train`` images, ``--epochs`` epochs,
the same global minibatch split evenly over the processes) is launched with
``torch.multiprocessing`` exactly as ``torchrun --nproc_per_node=N`` would
(one process per rank, ``RANK``/``WORLD_SIZE``/``MASTER_*`` set, one torch
thread each). Reported per experience: wall seconds of ``strategy.train``
(rank 0; the ranks synchronise every step) and real samples per second
(real, not replayed, rows trained on by all ranks together, divided by that
time). Precision is float32: bf16 autocast is measured only on a GPU, and
``gpu`` in the JSON says whether one was available (no GPU figure is ever
estimated).

Usage::

    python benchmarks/scaling.py                      # writes benchmarks/results/scaling.json
    python benchmarks/scaling.py --archs dense --train 1000 --epochs 1
"""

import argparse
import json
import os
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.distributed import free_local_port
from avalanche_lvae.streams import permuted_mnist

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scaling.json")
ARCHS = {"dense": dict(arch="dense"), "conv_w8": dict(arch="conv", conv_width=8)}


class RealRows(SupervisedPlugin, supports_distributed=True):
    """Counts the real (not replayed) rows this rank trains on, per experience."""

    def __init__(self):
        super().__init__()
        self.rows = {}

    def before_forward(self, strategy, **kwargs):
        replay = strategy.replay_batch
        exp = strategy.experience.current_experience
        self.rows[exp] = self.rows.get(exp, 0) + (strategy.mb_x.shape[0] if replay is None else replay.num_real)


def _worker(rank, world, port, args, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from avalanche.distributed import DistributedHelper
    DistributedHelper.init_distributed(random_seed=0, backend="gloo", use_cuda=False)
    try:
        stream = permuted_mnist(n_experiences=args["experiences"], max_train_per_experience=args["train"],
                                max_test_per_experience=10)
        model = LifelongVAE(**ARCHS[args["arch"]])
        counter = RealRows()
        strategy = LifelongVAEStrategy(
            model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
            train_mb_size=args["global_batch"] // world, train_epochs=args["epochs"], eval_mb_size=100,
            plugins=[counter], evaluator=EvaluationPlugin(loggers=[]))
        seconds = []
        for experience in stream.train_stream:
            start = time.perf_counter()
            strategy.train(experience)
            seconds.append(time.perf_counter() - start)
        rows = DistributedHelper.gather_all_objects(counter.rows)
        if DistributedHelper.is_main_process:  # only rank 0 writes
            total = [sum(r[e] for r in rows) for e in range(len(seconds))]
            with open(out_path, "w") as f:
                json.dump(dict(seconds_per_experience=seconds, real_rows_per_experience=total), f)
    finally:
        torch.distributed.destroy_process_group()



def measure(arch, world, args):
    """One run in ``world`` processes; returns rank 0's timings."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        run = dict(arch=arch, experiences=args.experiences, train=args.train, epochs=args.epochs,
                   global_batch=args.global_batch)
        mp.spawn(_worker, args=(world, free_local_port(), run, out), nprocs=world, join=True)
        with open(out) as f:
            result = json.load(f)
    result["real_samples_per_second"] = [
        rows / sec for rows, sec in zip(result["real_rows_per_experience"], result["seconds_per_experience"])]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--experiences", type=int, default=2)
    parser.add_argument("--train", type=int, default=2000, help="training images per experience")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    runs = []
    for arch in args.archs:
        for world in args.processes:
            load = os.getloadavg()[0]
            result = measure(arch, world, args)
            # other processes on the machine take cores from the ranks: the 1-minute
            # load average before and after each run says how busy it was
            runs.append(dict(arch=arch, world_size=world, precision="fp32", device="cpu",
                             threads_per_process=1, load_average_before=load,
                             load_average_after=os.getloadavg()[0], **result))
            print(f"{arch:8s} {world} process(es): " + ", ".join(
                f"exp {i}: {s:.1f}s, {r:.0f} real samples/s"
                for i, (s, r) in enumerate(zip(result["seconds_per_experience"], result["real_samples_per_second"]))),
                flush=True)
    gpu = torch.cuda.is_available()
    payload = dict(
        command=" ".join(["python benchmarks/scaling.py"] + list(sys.argv[1:] if argv is None else argv)),
        cpu_cores=os.cpu_count(), backend="gloo", global_batch=args.global_batch, epochs=args.epochs,
        train_per_experience=args.train, experiences=args.experiences,
        gpu=("a GPU is visible but this script measures the CPU path only" if gpu else
             "no GPU was available to this run: no GPU (fp32 or bf16) figure was measured, and none is estimated"),
        bf16="not measured (bf16 autocast is measured only on a GPU)",
        runs=runs,
    )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
