"""Task-free training: BoundaryDetectionPlugin and LifelongVAEStrategy(boundaries="detected")."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from torch.nn.modules.batchnorm import _BatchNorm

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.data import load_tensors
from avalanche_lvae.plugins import BoundaryDetectionPlugin, TeacherSwapPlugin
from avalanche_lvae.streams import benchmark_from_tensors

BATCH = 32
ROWS = 1600  # rows per distribution
SMALL = dict(burn_in=800, wait=800, buffer_size=50, window=150)


def _digits(data_root, classes, n=ROWS, offset=0):
    """The first ``n`` training images of ``classes``, in file order (already shuffled)."""
    x, y = load_tensors("MNIST", True, data_root)
    keep = torch.nonzero(torch.isin(y, torch.tensor(classes))).flatten()[offset: offset + n]
    return x[keep], y[keep]


def _strategy(plugin, probe=None):
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=128, continuous_dim=8)
    return LifelongVAEStrategy(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), boundaries=plugin,
        train_mb_size=BATCH, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]),
        plugins=[probe] if probe else None,
    )


def _train_merged(strategy, *parts):
    """All parts as one experience read in order: no boundary information."""
    merged = benchmark_from_tensors([tuple(torch.cat(p) for p in zip(*parts))], [parts[0]])
    strategy.train(merged.train_stream[0], shuffle=False)


def test_fires_once_near_the_switch(data_root):
    plugin = BoundaryDetectionPlugin(**SMALL)
    strategy = _strategy(plugin)
    _train_merged(strategy, _digits(data_root, [0, 1]), _digits(data_root, [2, 3]))
    swaps = [d for d in plugin.detections if d.outcome == "swap"]
    assert len(swaps) == 1, plugin.detections
    assert ROWS <= swaps[0].sample_index <= ROWS + 3 * BATCH + SMALL["buffer_size"]
    assert strategy.model.discrete_dim == 2 and strategy.teacher.discrete_dim == 1
    assert strategy.past_distributions == 1


def test_quiet_on_one_distribution_and_ignores_given_boundaries(data_root):
    # An online stream of one distribution: 50 experiences, none of them a new distribution.
    x, y = _digits(data_root, [0, 1, 2, 3], n=2 * ROWS)
    benchmark = benchmark_from_tensors([(x, y)], [(x[:100], y[:100])])
    plugin = BoundaryDetectionPlugin(**SMALL)
    strategy = _strategy(plugin)
    for experience in split_online_stream(benchmark.train_stream, experience_size=2 * BATCH, shuffle=False):
        strategy.train(experience, shuffle=False)
    assert plugin.samples_seen == 2 * ROWS
    assert [d for d in plugin.detections if d.outcome == "swap"] == []
    assert strategy.teacher is None and strategy.model.discrete_dim == 1


def test_cap_stops_growth(data_root):
    plugin = BoundaryDetectionPlugin(max_distributions=2, **SMALL)
    strategy = _strategy(plugin)
    _train_merged(strategy, _digits(data_root, [0, 1]), _digits(data_root, [2, 3]), _digits(data_root, [4, 5]))
    outcomes = [d.outcome for d in plugin.detections]
    assert outcomes.count("swap") == 1 and "cap" in outcomes, plugin.detections
    assert strategy.model.discrete_dim == 2


class _Probe(SupervisedPlugin):
    """Records the student before each update and the state the first iteration after a swap sees."""

    def __init__(self):
        super().__init__()
        self.last_student, self.state_after_swap = None, None

    def before_training_iteration(self, strategy, **kwargs):
        if strategy.teacher is not None and self.state_after_swap is None:
            bn = [m for m in strategy.model.modules() if isinstance(m, _BatchNorm)]
            self.state_after_swap = dict(
                teacher=strategy.teacher, student_dim=strategy.model.discrete_dim,
                bn_reset=all(int(m.num_batches_tracked) == 0 for m in bn),
                optimizer_state=len(strategy.optimizer.state), rows=len(strategy.mbatch[0]),
                num_real=strategy.replay_batch.num_real, previous=self.last_student,
            )

    def after_training_iteration(self, strategy, **kwargs):
        self.last_student = {k: v.clone() for k, v in strategy.model.state_dict().items()}


def test_detected_swap_has_the_given_boundary_semantics(data_root):
    probe = _Probe()
    plugin = BoundaryDetectionPlugin(**SMALL)
    strategy = _strategy(plugin, probe)
    _train_merged(strategy, _digits(data_root, [0, 1]), _digits(data_root, [2, 3]))
    seen = probe.state_after_swap
    assert seen is not None
    # The teacher is the frozen student as it was after the last update before the swap.
    teacher = seen["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, seen["previous"][name]), name
    # z_d grown by one, BatchNorm statistics and optimizer state reset, as TeacherSwapPlugin at a given boundary.
    assert teacher.discrete_dim == 1 and seen["student_dim"] == 2
    assert seen["bn_reset"] and seen["optimizer_state"] == 0
    # Buffered rows are prepended, and replay takes k/(k+1) = 1/2 of the minibatch (k from the detections).
    assert seen["rows"] == 2 * BATCH
    assert seen["num_real"] == BATCH


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="window"):
        BoundaryDetectionPlugin(buffer_size=100, window=50)
    with pytest.raises(ValueError, match="score"):
        BoundaryDetectionPlugin(score="likelihood")
    model = LifelongVAE(hidden_dim=16, continuous_dim=2)
    with pytest.raises(ValueError, match="boundaries"):
        LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()), boundaries="found")


def test_detected_mode_replaces_the_swap_at_given_boundaries():
    model = LifelongVAE(hidden_dim=16, continuous_dim=2)
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()), boundaries="detected")
    assert isinstance(strategy.plugins[0], BoundaryDetectionPlugin)
    assert not any(isinstance(p, TeacherSwapPlugin) for p in strategy.plugins)
    model = LifelongVAE(hidden_dim=16, continuous_dim=2)
    given = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()))
    assert isinstance(given.plugins[0], TeacherSwapPlugin)


def test_veto_when_the_student_explains_the_buffer(data_root):
    # A full buffer whose rows score like the well-explained rows: vetoed, no swap, the rows trained on once.
    x, y = _digits(data_root, [0, 1], n=60)
    model = LifelongVAE(hidden_dim=32, continuous_dim=2)
    plugin = BoundaryDetectionPlugin(buffer_size=50, window=150)
    scores = plugin.score(model, x, y)
    plugin._mean, plugin._var = scores.mean(0), scores.var(0)
    plugin._buffer = [(i, (x[i], y[i], torch.zeros((), dtype=torch.long)), True) for i in range(50)]
    strategy = type("Strategy", (), {"model": model})()
    plugin._decide(strategy)
    assert [d.outcome for d in plugin.detections] == ["veto"] and plugin.detections[0].buffer_z < plugin.z_threshold
    assert model.discrete_dim == 1 and not hasattr(strategy, "teacher")
    assert len(plugin._pending) == 50 and plugin._buffer == []
    # The same rows far above the statistics would be a new distribution.
    plugin._mean = scores.mean(0) - 10 * scores.std(0)
    plugin._buffer = [(i, (x[i], y[i], torch.zeros((), dtype=torch.long)), True) for i in range(50)]
    plugin.max_distributions = 1
    plugin._decide(strategy)
    assert plugin.detections[-1].outcome == "cap" and model.discrete_dim == 1


class _ScoredRows(BoundaryDetectionPlugin):
    """Scores set by the test: 100 nats for the rows in ``poor``, 0 for the others."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.poor = []

    def score(self, model, x, y):
        scores = torch.zeros(len(x), 1)
        scores[self.poor] = 100.0
        return scores


def test_only_a_sustained_share_of_poor_rows_is_held_out_of_training():
    # hold_share = buffer_size / window = 1/3. A learned distribution's few hard
    # rows are buffered (they count towards a detection) but trained on at once;
    # when most of a minibatch is poor, those rows leave it until the decision.
    plugin = _ScoredRows(burn_in=BATCH, buffer_size=50, window=150)
    rows = torch.arange(12 * BATCH, dtype=torch.float32)
    strategy = type("Strategy", (), {"model": None})()

    def iterate(poor=()):
        first = plugin.samples_seen
        plugin.poor = list(poor)
        x = rows[first: first + BATCH].view(-1, 1, 1, 1)
        strategy.mbatch = [x, x.flatten().long(), torch.zeros(BATCH, dtype=torch.long)]
        plugin.before_training_iteration(strategy)
        return strategy.mbatch[0].flatten().long().tolist()

    iterate()  # burn-in: the statistics start
    assert iterate(poor=[3, 7]) == list(range(BATCH, 2 * BATCH))  # 2/32 poor: the minibatch is unchanged
    assert [index for index, _, held in plugin._buffer] == [BATCH + 3, BATCH + 7]
    trained = iterate(poor=range(20))  # 20/32 poor: held out, the last well-explained rows fill in
    assert len(trained) == BATCH and not set(range(2 * BATCH, 2 * BATCH + 20)) & set(trained)
    assert len(plugin._buffer) == 22
    released = []
    while plugin._buffer or plugin._pending:  # the window passes without a decision
        first = plugin.samples_seen
        released += [row for row in iterate() if row < first]
    # Only the 20 held rows are released into training; the two others were trained on already.
    assert released == list(range(2 * BATCH, 2 * BATCH + 20))
    assert plugin.detections == []


def _task_free_script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "task_free.py"
    spec = importlib.util.spec_from_file_location("task_free", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_boundary_scores_match_each_true_boundary_once_within_the_window():
    scores = _task_free_script().boundary_scores([130, 160, 2100, 5000], [100, 2000, 4000], window=500)
    # 130 detects 100, 160 is a second swap for the same boundary (false), 2100 detects 2000,
    # 5000 is beyond 4000 + 500 (false); 4000 is missed.
    assert scores == {"recall": 2 / 3, "precision": 2 / 4, "false_detections": 2, "missed": 1}


def test_task_free_benchmark_writes_detections_and_both_accuracies(data_root, tmp_path):
    out = tmp_path / "task_free.json"
    argv = ["--streams", "mnist_fashion", "--calibration-max-train-per-experience", "600", "--burn-in", "400",
            "--wait", "400", "--max-test-per-experience", "100", "--hidden-dim", "64", "--lr", "3e-3",
            "--out", str(out)]
    assert _task_free_script().main(argv) == 0
    result = json.loads(out.read_text())
    stream = result["streams"]["mnist_fashion"]
    assert stream["true_boundaries"] == [600] and result["config"]["score"] == "joint"
    run = stream["per_seed"]["0"]
    assert set(run["detected"]) >= {"detections", "swaps", "recall", "precision", "z_d_grown", "average_accuracy"}
    assert run["detected"]["z_d_grown"] == len(run["detected"]["swaps"]) and run["given"]["z_d_grown"] == 1
    assert 0 <= run["given"]["average_accuracy"] <= 1
