"""LifelongVAEStrategy under Avalanche's DistributedHelper: 2 CPU processes (gloo), torch.multiprocessing.

One run of 2 permuted-MNIST experiences (1000 training images each, 6 epochs) in 2 processes checks that: it
trains; the student and the teacher are bit-identical across ranks after every experience (SHA-256 of all weights
and buffers); the ranks replay different images; the pre-loaded loader shards every epoch as DistributedSampler
does; every rank reports the same test accuracy over the whole test set; and that accuracy is within
0.02 of a single-process run with the same global batch. A NaN on one rank only stops both ranks, within a
bounded time, with the same NonFiniteLossError naming the term and the iteration.

The command line under ``python -m torch.distributed.run`` (torchrun), 2 processes: one results JSON
with the world size in its config, checkpoints written once, a divergence reported once with exit code
1, and a run killed in experience 1 resumed by 2 processes to the uninterrupted run's numbers, bit for
bit.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.experiments.cli import main as cli_main
from avalanche_lvae.experiments.runner import CRASH_ENV_VAR, CRASH_EXIT_CODE
from avalanche_lvae.distributed import free_local_port
from avalanche_lvae.streams import permuted_mnist

WORLD, GLOBAL_BATCH, EPOCHS, TRAIN, TEST = 2, 50, 6, 1000, 1000
ACCURACY = "Top1_Acc_Stream/eval_phase/test_stream"


class Probe(SupervisedPlugin, supports_distributed=True):
    """Per experience: digests of student/teacher, row sets seen each epoch, first replay batch."""

    def __init__(self):
        super().__init__()
        self.report = {"experiences": [], "rows_per_epoch": [], "replay": None, "num_real": set()}

    def before_training_epoch(self, strategy, **kwargs):
        self.report["rows_per_epoch"].append([])

    def before_forward(self, strategy, **kwargs):
        replay = strategy.replay_batch
        real = strategy.mb_x if replay is None else strategy.mb_x[: replay.num_real]
        # identify each real image by a digest of its pixels
        self.report["rows_per_epoch"][-1] += [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in real]
        if replay is not None:
            self.report["num_real"].add(replay.num_real)
            if self.report["replay"] is None:
                self.report["replay"] = float(strategy.mb_x[replay.num_real:].sum())

    def after_training_exp(self, strategy, **kwargs):
        from avalanche_lvae.distributed import replica_digest
        teacher = None if strategy.teacher is None else replica_digest(strategy.teacher)
        self.report["experiences"].append(dict(student=replica_digest(strategy.model), teacher=teacher))


def _run(data_root, batch):
    torch.set_num_threads(1)
    stream = permuted_mnist(n_experiences=2, max_train_per_experience=TRAIN, max_test_per_experience=TEST // 2,
                            dataset_root=data_root, seed=0)
    model = LifelongVAE(hidden_dim=128)
    probe = Probe()
    # examples/permuted_mnist.py's defaults (README): classification weight 100, posterior replay labels,
    # z_c consistency
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                   criterion=JointBoundLoss(100.0), replay_label_source="posterior",
                                   continuous_consistency_weight=1.0,
                                   train_mb_size=batch, train_epochs=EPOCHS, eval_mb_size=500, plugins=[probe],
                                   evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
    for experience in stream.train_stream:
        strategy.train(experience)
    metrics = strategy.eval(stream.test_stream)
    probe.report["accuracy"] = next(v for k, v in metrics.items() if k.startswith(ACCURACY))
    probe.report["num_real"] = sorted(probe.report["num_real"])
    return probe.report


def _worker(rank, port, data_root, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    from avalanche.distributed import DistributedHelper
    DistributedHelper.init_distributed(random_seed=0, backend="gloo", use_cuda=False)
    try:
        report = _run(data_root, GLOBAL_BATCH // WORLD)
        reports = DistributedHelper.gather_all_objects(report)
        if DistributedHelper.is_main_process:  # only rank 0 writes
            with open(os.path.join(out_dir, "reports.json"), "w") as f:
                json.dump(reports, f)
    finally:
        torch.distributed.destroy_process_group()



def test_two_processes_train_in_lockstep_and_match_one_process(data_root, tmp_path):
    mp.spawn(_worker, args=(free_local_port(), str(data_root), str(tmp_path)), nprocs=WORLD, join=True)
    assert sorted(os.listdir(tmp_path)) == ["reports.json"]
    ranks = json.loads((tmp_path / "reports.json").read_text())

    # bit-identical replicas after each experience; the teacher exists from the second on
    assert ranks[0]["experiences"] == ranks[1]["experiences"]
    assert [e["teacher"] is None for e in ranks[0]["experiences"]] == [True, False]
    assert ranks[0]["experiences"][0]["student"] != ranks[0]["experiences"][1]["student"]
    # each rank its own replay; real rows per rank: b - floor(b k/(k+1)) at k = 1, as one process at batch b
    assert ranks[0]["replay"] != ranks[1]["replay"]
    local = GLOBAL_BATCH // WORLD
    assert ranks[0]["num_real"] == ranks[1]["num_real"] == [local - local // 2]
    # sharding: in every epoch of experience 0 the ranks see disjoint halves of the TRAIN images
    epochs0 = list(zip(ranks[0]["rows_per_epoch"][:EPOCHS], ranks[1]["rows_per_epoch"][:EPOCHS]))
    for a, b in epochs0:
        assert len(a) == len(b) == TRAIN // WORLD and not set(a) & set(b) and len(set(a) | set(b)) == TRAIN
    assert epochs0[0][0] != epochs0[1][0]  # reshuffled every epoch
    # the same accuracy on every rank (whole test set), close to one process with the same global batch
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"]
    RNGManager.set_random_seeds(0)
    single = _run(data_root, GLOBAL_BATCH)
    print(f"accuracy: 2 processes {ranks[0]['accuracy']:.4f}, 1 process {single['accuracy']:.4f}")
    assert ranks[0]["accuracy"] > 0.3, ranks[0]["accuracy"]  # chance: 0.1
    assert abs(ranks[0]["accuracy"] - single["accuracy"]) <= 0.02, (ranks[0]["accuracy"], single["accuracy"])


# ---- a non-finite value on one rank only ----------------------------------------------------------------------

NAN_ROWS, NAN_BATCH, NAN_DEADLINE_S = 128, 8, 240  # per rank: 64 rows, 8 iterations of 8 in the one epoch
# (check interval, iteration at which rank 1 alone gets a NaN image, expected detection line)
NAN_CASES = [
    (4, 3, "Training stopped before its update"),  # an interval check: rank 0 has recorded nothing by then
    (4, 5, "Detected at iteration 7 (checks every 4"),  # rank 0 goes non-finite at 6, after the averaged update
    (100, 7, "Detected at iteration 7 (checks every 100"),  # the end-of-epoch check, rank 0 still clean
]


class PoisonOneRank(SupervisedPlugin, supports_distributed=True):
    """Puts a NaN pixel into the minibatch of rank 1 only, at one iteration."""

    def __init__(self, iteration):
        super().__init__()
        self.iteration = iteration

    def before_forward(self, strategy, **kwargs):
        from avalanche.distributed import DistributedHelper
        if DistributedHelper.rank == 1 and strategy.clock.train_exp_iterations == self.iteration:
            strategy.mbatch[0] = strategy.mbatch[0].clone()
            strategy.mbatch[0][0, 0, 0, 0] = float("nan")


def _nan_worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    from avalanche.distributed import DistributedHelper
    from avalanche_lvae import NonFiniteLossError
    from avalanche_lvae.streams import benchmark_from_tensors
    torch.set_num_threads(1)
    DistributedHelper.init_distributed(random_seed=0, backend="gloo", use_cuda=False)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(NAN_ROWS, 1, 28, 28, generator=generator), torch.randint(0, 10, (NAN_ROWS,), generator=generator)
    experience = benchmark_from_tensors([(x, y)], [(x[:8], y[:8])]).train_stream[0]
    outcomes = []
    try:
        for interval, iteration, _ in NAN_CASES:
            model = LifelongVAE(hidden_dim=32)
            strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                           train_mb_size=NAN_BATCH, train_epochs=1,
                                           non_finite_check_interval=interval, plugins=[PoisonOneRank(iteration)],
                                           evaluator=EvaluationPlugin(loggers=[]))
            try:
                strategy.train(experience)
                outcomes.append("trained without an error")
            except NonFiniteLossError as error:
                outcomes.append(str(error))
            # written after every case, so a case that fails is seen with the ones before it
            Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcomes))
    finally:
        torch.distributed.destroy_process_group()


def test_a_non_finite_value_on_one_rank_stops_both_with_the_same_error(tmp_path):
    context = mp.start_processes(_nan_worker, args=(free_local_port(), str(tmp_path)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + NAN_DEADLINE_S
    while not context.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"the ranks did not finish within {NAN_DEADLINE_S}s (a rank waits for the other): "
                                 f"{[p.name for p in context.processes if p.is_alive()]}")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert len(ranks[0]) == len(ranks[1]) == len(NAN_CASES)
    for (interval, iteration, detection), message0, message1 in zip(NAN_CASES, *ranks):
        # both ranks raise the same NonFiniteLossError: the term rank 1 saw, the iteration it appeared at
        assert message0 == message1, (interval, iteration, message0, message1)
        assert message0.startswith(f"non-finite loss at experience 0, iteration {iteration} of that experience: "
                                   "encoder "), message0
        assert "went non-finite" in message0 and detection in message0, message0


# ---- the command line under torchrun -------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
CLI_RUN = ["-m", "avalanche_lvae", "run", "split_mnist", "--strategies", "lvae", "--max-train-per-experience", "200",
           "--max-test-per-experience", "100", "--epochs", "1", "--no-frechet", "--n-experiences", "2",
           "--batch-size", "50"]
REPRODUCIBLE = ("avg_accuracy_per_experience", "accuracy_per_experience", "neg_elbo_per_experience",
                "final_avg_forgetting")


def _torchrun(data_root, flags, crash_at=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LVAE_DATA_DIR=str(data_root))
    env.pop(CRASH_ENV_VAR, None)
    if crash_at is not None:
        env[CRASH_ENV_VAR] = str(crash_at)
    return subprocess.run([sys.executable, *TORCHRUN, *CLI_RUN, *map(str, flags)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_under_torchrun_writes_once_and_resumes_bit_for_bit(data_root, tmp_path):
    # Uninterrupted: exit 0, one results JSON (rank 0's), one table, world size and batches in config.
    out = tmp_path / "out"
    out.mkdir()
    done = _torchrun(data_root, ["--results-json", out / "full.json", "--checkpoint-dir", tmp_path / "ck_full"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["full.json"]
    assert done.stdout.count("results written to") == 1 and done.stdout.count("avg acc") == 1, done.stdout
    full = json.loads((out / "full.json").read_text())
    assert {k: full["config"][k] for k in ("world_size", "global_batch", "per_rank_batch", "batch_size")} == \
        dict(world_size=2, global_batch=50, per_rank_batch=25, batch_size=50)
    assert full["results"]["lvae"]["resumed_after_experience"] is None
    assert sorted(os.listdir(tmp_path / "ck_full" / "lvae")) == ["ckpt_exp000.pkl", "ckpt_exp001.pkl"]

    # Killed in the middle of experience 1 (both ranks, after their first update): the checkpoint of
    # experience 0 is complete, no results JSON.
    ck = tmp_path / "ck"
    crashed = _torchrun(data_root, ["--results-json", out / "resumed.json", "--checkpoint-dir", ck], crash_at=1)
    assert crashed.returncode != 0 and f"exitcode  : {CRASH_EXIT_CODE}" in crashed.stderr, crashed.stderr[-3000:]
    assert sorted(os.listdir(ck / "lvae")) == ["ckpt_exp000.pkl"]
    assert sorted(os.listdir(out)) == ["full.json"]

    # Resumed with --lr 1e6: every rank stops at the same iteration; one error line (rank 0's), exit
    # code 1 (torchrun may stop the other rank first), the checkpoint unchanged, no results JSON.
    before = (ck / "lvae" / "ckpt_exp000.pkl").read_bytes()
    diverged = _torchrun(data_root, ["--results-json", out / "resumed.json", "--checkpoint-dir", ck, "--lr", "1e6"])
    errors = [line for line in diverged.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-finite loss at experience 1" in errors[0], diverged.stderr[-3000:]
    assert "exitcode  : 1 " in diverged.stderr, diverged.stderr[-3000:]
    assert (ck / "lvae" / "ckpt_exp000.pkl").read_bytes() == before and sorted(os.listdir(out)) == ["full.json"]

    # Resumed by 2 processes with the original flags: the numbers of the uninterrupted run, bit for bit.
    resumed = _torchrun(data_root, ["--results-json", out / "resumed.json", "--checkpoint-dir", ck])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads((out / "resumed.json").read_text())["results"]["lvae"]
    assert again["resumed_after_experience"] == 0
    first = full["results"]["lvae"]
    assert {k: again[k] for k in REPRODUCIBLE} == {k: first[k] for k in REPRODUCIBLE}
    assert first["avg_accuracy_per_experience"][0] > 0.3  # it trained (10-way classifier: chance 0.1)


def test_cli_refuses_what_cannot_run_under_torchrun(monkeypatch, capsys):
    # Checked from the torchrun variables before joining the process group: exit 2, one error line.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(["run", "split_mnist", "--strategies", "lvae", "--batch-size", "51"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "global batch 51 does not divide among 2 processes" in err, err
    assert cli_main(["run", "split_mnist", "--strategies", "lvae,gr,si"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gr, si cannot run under torchrun" in err, err
    monkeypatch.setenv("RANK", "1")  # the other ranks stay silent
    assert cli_main(["run", "split_mnist", "--strategies", "lwf"]) == 2
    assert capsys.readouterr().err == ""
