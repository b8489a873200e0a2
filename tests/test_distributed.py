"""LifelongVAEStrategy under Avalanche's DistributedHelper: 2 CPU processes (gloo), torch.multiprocessing.

One run of 2 permuted-MNIST experiences (1000 training images each, 6 epochs) in 2 processes checks that: it trains; the student and the
teacher are bit-identical across ranks after every experience (SHA-256 of all weights and buffers);
the ranks replay different images; the pre-loaded loader shards every epoch as DistributedSampler
does; every rank reports the same test accuracy over the whole test set; and that accuracy is within
0.02 of a single-process run with the same global batch.
"""

import hashlib
import json
import os
import socket

import torch
import torch.multiprocessing as mp
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy
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
    # examples/permuted_mnist.py's defaults (README): classification weight 100, posterior replay labels, z_c consistency
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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_lockstep_and_match_one_process(data_root, tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(data_root), str(tmp_path)), nprocs=WORLD, join=True)
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
