"""LifelongVAEStrategy end to end: swap semantics, switching terms off, forgetting, Avalanche integration, validation.

The plugins one by one: test_plugins.py.
"""

import gc

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.logging import CSVLogger, TensorboardLogger, TextLogger
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAENaive, NonFiniteLossError
from avalanche_lvae.plugins import (
    InformationRestrictionPlugin,
    PosteriorConsistencyPlugin,
    TeacherReplayPlugin,
    TeacherSwapPlugin,
)
from avalanche_lvae.streams import benchmark_from_tensors, experience_tensors, permuted_mnist, split_mnist

HIDDEN = 64


@pytest.fixture(scope="module")
def small_stream(data_root):
    return permuted_mnist(n_experiences=3, dataset_root=data_root, max_train_per_experience=256,
                          max_test_per_experience=128)


def _strategy(cls=LifelongVAEStrategy, lr=1e-3, plugins=None, discrete_dim=1, evaluator=None, **kwargs):
    model = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=discrete_dim)
    return cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=lr), train_mb_size=64,
               train_epochs=1, eval_mb_size=256, plugins=plugins,
               evaluator=evaluator or EvaluationPlugin(loggers=[]), **kwargs)


class Recorder(SupervisedPlugin):
    """Records what the lifelong plugins did (it runs after them)."""

    def __init__(self):
        super().__init__()
        self.at_exp_start, self.first_iteration, self.replay_components = [], [], []

    def before_training_exp(self, strategy, **kwargs):
        teacher = strategy.teacher
        self.at_exp_start.append(dict(
            discrete_dim=strategy.model.discrete_dim,
            teacher_state=None if teacher is None else {k: v.clone() for k, v in teacher.state_dict().items()},
            teacher_frozen=None if teacher is None else (not teacher.training and not any(
                p.requires_grad for p in teacher.parameters())),
            bn_mean=strategy.model.encoder.net[1][1].running_mean.clone(),
            first=True,
        ))

    def before_training_iteration(self, strategy, **kwargs):
        record = self.at_exp_start[-1]
        if record.pop("first", False):
            self.first_iteration.append(dict(optimizer_state=len(strategy.optimizer.state),
                                             batch=strategy.mbatch[0].shape[0]))
        if strategy.replay_batch is not None:
            self.replay_components.append((strategy.clock.train_exp_counter, strategy.replay_batch.components))

    def after_training_exp(self, strategy, **kwargs):
        self.at_exp_start[-1]["student_after"] = {k: v.clone() for k, v in strategy.model.state_dict().items()}


def test_teacher_swap_semantics_and_replay_shares(small_stream):
    RNGManager.set_random_seeds(0)
    recorder = Recorder()
    strategy = _strategy(plugins=[recorder])
    gc.collect()
    before = sum(isinstance(o, LifelongVAE) for o in gc.get_objects())
    for exp in small_stream.train_stream:
        strategy.train(exp)
    gc.collect()
    # Exactly one teacher beside the student: the old teachers were dropped.
    assert sum(isinstance(o, LifelongVAE) for o in gc.get_objects()) - before == 1
    first, second, third = recorder.at_exp_start
    assert first["teacher_state"] is None and first["discrete_dim"] == 1
    for previous, record, k in [(first, second, 2), (second, third, 3)]:
        # The teacher is the student as it was trained on the previous experience, frozen.
        assert record["teacher_state"].keys() == previous["student_after"].keys()
        assert all(torch.equal(record["teacher_state"][n], previous["student_after"][n])
                   for n in previous["student_after"])
        assert record["teacher_frozen"]
        # z_d grew: one value per distribution seen, BatchNorm statistics reset.
        assert record["discrete_dim"] == k
        assert torch.equal(record["bn_mean"], torch.zeros_like(record["bn_mean"]))
    # Adam's moments are reset at every swap (Adam creates its state lazily at step()).
    assert [r["optimizer_state"] for r in recorder.first_iteration] == [0, 0, 0]
    # Replay starts with the second experience and covers each past component equally.
    assert {k for k, _ in recorder.replay_components} == {1, 2}
    for k, components in recorder.replay_components:
        counts = torch.bincount(components, minlength=k)
        assert len(counts) == k and counts.max() - counts.min() <= 1
    # The default batch composition keeps B rows: at k = 1, half of them replay.
    assert recorder.first_iteration[1]["batch"] == 64 and recorder.first_iteration[2]["batch"] == 64
    assert [len(c) for k, c in recorder.replay_components if k == 1][0] == 32


def test_strategy_builds_its_criterion_from_classification_weight(small_stream):
    assert _strategy()._criterion.classification_weight == LifelongVAEStrategy.DEFAULT_CLASSIFICATION_WEIGHT
    assert _strategy(classification_weight=3.0)._criterion.classification_weight == 3.0
    with pytest.raises(ValueError, match="either criterion or classification_weight"):
        _strategy(criterion=JointBoundLoss(), classification_weight=3.0)
    # Prior replay labels classify the generating z: a features classifier has none, so training refuses to start.
    strategy = _strategy(replay_label_source="prior")
    with pytest.raises(ValueError, match='label_source="prior"'):
        strategy.train(small_stream.train_stream[0])


def test_paper_preset_gives_the_papers_equations(small_stream):
    from avalanche_lvae import PAPER_MODEL, PAPER_STRATEGY

    model = LifelongVAE(hidden_dim=HIDDEN, **PAPER_MODEL)
    assert model.classifier_input == "latent" and model.classifier_projection is not None
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()), train_mb_size=64,
                                   evaluator=EvaluationPlugin(loggers=[]), **PAPER_STRATEGY)
    assert strategy._criterion.classification_weight == 1.0
    replay = next(p for p in strategy.plugins if isinstance(p, TeacherReplayPlugin))
    assert (replay.label_source, replay.distillation_temperature, replay.mixing, replay.temperature) == (
        "prior", None, "batch_composition", 1.0)
    regulariser = next(p for p in strategy.plugins if isinstance(p, PosteriorConsistencyPlugin))
    assert (regulariser.consistency_weight, regulariser.continuous_consistency_weight) == (1.0, 0.0)
    assert next(p for p in strategy.plugins if isinstance(p, InformationRestrictionPlugin)).weight == 0.01
    seen = {}

    class Temperatures(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            seen[strategy.clock.train_exp_counter] = strategy.mb_class_temperatures

    strategy.plugins.append(Temperatures())
    for exp in small_stream.train_stream[:2]:
        strategy.train(exp)
    assert seen == {0: None, 1: None}  # plain cross-entropy on the replay, as CCL-GM
    defaults = _strategy(plugins=[Temperatures()])
    for exp in small_stream.train_stream[:2]:
        defaults.train(exp)
    assert seen[0] is None and set(seen[1].tolist()) == {1.0, 2.0}  # the defaults distil at T = 2


@pytest.mark.parametrize(
    "kwargs, absent_term, grows, replays",
    [
        (dict(replay=False), "consistency", True, False),
        (dict(consistency_weight=0.0), "consistency", True, True),
        (dict(info_weight=0.0), "information", True, True),  # the default
        (dict(grow_discrete=False), None, False, True),
    ],
)
def test_each_plugin_can_be_disabled(small_stream, kwargs, absent_term, grows, replays):
    seen_terms, replayed = set(), set()

    class Terms(SupervisedPlugin):
        def after_backward(self, strategy, **kw):
            seen_terms.update(strategy.loss_terms)
            replayed.add(strategy.replay_batch is not None and len(strategy.replay_batch.components) > 0)

    strategy = _strategy(plugins=[Terms()], **{"info_weight": 0.01, **kwargs})
    for exp in small_stream.train_stream[:2]:
        strategy.train(exp)
    if absent_term:
        assert absent_term not in seen_terms
    assert ({"consistency", "information"} - {absent_term}) <= seen_terms or not replays
    assert strategy.model.discrete_dim == (2 if grows else 1)
    assert (True in replayed) == replays


def test_strategy_trains_with_batch_composition_and_the_optional_terms(small_stream):
    batches, seen = [], set()

    class Terms(SupervisedPlugin):
        def after_backward(self, strategy, **kw):
            seen.update(strategy.loss_terms)
            batches.append((strategy.clock.train_exp_counter, strategy.mbatch[0].shape[0]))

    strategy = _strategy(plugins=[Terms()], replay_mixing="batch_composition", continuous_consistency_weight=1.0,
                         replay_temperature=0.5, info_weight=0.01)
    for exp in small_stream.train_stream:
        strategy.train(exp)
    # 256 images per experience in minibatches of 64: the batch never grows.
    assert {size for _, size in batches} == {64}
    assert {"consistency", "continuous_consistency", "information"} <= seen
    assert strategy.model.discrete_dim == 3


def test_continuous_consistency_is_off_by_default_and_added_when_weighted(small_stream):
    seen = {}

    class Terms(SupervisedPlugin):
        def after_backward(self, strategy, **kw):
            seen.setdefault(strategy.model.discrete_dim, set()).update(strategy.loss_terms)

    for weight in (0.0, 1.0):
        seen.clear()
        strategy = _strategy(plugins=[Terms()], continuous_consistency_weight=weight)
        for exp in small_stream.train_stream[:2]:
            strategy.train(exp)
        assert ("continuous_consistency" in seen[2]) == (weight > 0)
        assert "continuous_consistency" not in seen[1]  # no teacher yet


def test_lifelong_strategy_forgets_less_than_naive(data_root):
    stream = permuted_mnist(n_experiences=3, dataset_root=data_root, max_train_per_experience=3000,
                            max_test_per_experience=500)
    first_task_accuracy = {}
    for name, cls, discrete_dim, options in [
        ("lvae", LifelongVAEStrategy, 1, {}),  # the default: batch composition
        ("lvae_loss_weights", LifelongVAEStrategy, 1, dict(replay_mixing="loss_weights")),
        ("naive", LVAENaive, 3, {}),
    ]:
        RNGManager.set_random_seeds(0)
        model = LifelongVAE(discrete_dim=discrete_dim, hidden_dim=256)
        strategy = cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=128,
                       train_epochs=3, eval_mb_size=500,
                       evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]), **options)
        for exp in stream.train_stream:
            strategy.train(exp)
        results = strategy.eval(stream.test_stream[:1])
        first_task_accuracy[name] = results["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"]
    # Measured with this seed and the library's defaults (classifier on the encoder's features, replay
    # distilled at T = 2, classification weight 10), first task after three: lvae 0.868 (batch
    # composition), 0.848 with loss weights, naive 0.226. With the papers' equations (PAPER_MODEL,
    # PAPER_STRATEGY) they were 0.216 / 0.290 / 0.152.
    assert first_task_accuracy["lvae"] > first_task_accuracy["naive"] + 0.3, first_task_accuracy
    assert first_task_accuracy["lvae_loss_weights"] > first_task_accuracy["naive"] + 0.3, first_task_accuracy


def test_library_defaults_forget_less_than_naive_on_class_incremental_mnist(data_root):
    # LifelongVAEStrategy(model=LifelongVAE(), optimizer=...) with nothing else, against the same model
    # and criterion trained naively, on a small class-incremental stream (3 experiences of 2 classes).
    stream = split_mnist(n_experiences=5, dataset_root=data_root, fixed_class_order=list(range(10)),
                         max_train_per_experience=1000, max_test_per_experience=200)
    final = {}
    for name in ("lvae", "naive"):
        RNGManager.set_random_seeds(0)
        if name == "lvae":
            model = LifelongVAE()
            strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                           evaluator=EvaluationPlugin(loggers=[]))
        else:
            model = LifelongVAE(discrete_dim=3)
            strategy = LVAENaive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                 criterion=JointBoundLoss(LifelongVAEStrategy.DEFAULT_CLASSIFICATION_WEIGHT),
                                 train_epochs=LifelongVAEStrategy.DEFAULT_TRAIN_EPOCHS, train_mb_size=128,
                                 evaluator=EvaluationPlugin(loggers=[]))
        for exp in stream.train_stream[:3]:
            strategy.train(exp)
        model.eval()
        with torch.no_grad():
            accuracies = []
            for exp in stream.test_stream[:3]:
                x, y = experience_tensors(exp)
                accuracies.append(float((model(x).class_logits.argmax(-1) == y).float().mean()))
        final[name] = accuracies
    # Naive keeps only the last experience's classes; the defaults keep the first ones. Measured with
    # this seed: lvae 0.950 / 0.775 / 0.940 on the three test sets, naive 0.000 / 0.025 / 0.970.
    assert sum(final["lvae"][:2]) / 2 > sum(final["naive"][:2]) / 2 + 0.3, final
    assert sum(final["lvae"]) / 3 > sum(final["naive"]) / 3 + 0.2, final


def test_avalanche_metrics_and_loggers_work_unchanged(small_stream, tmp_path):
    text = tmp_path / "log.txt"
    with open(text, "w") as handle:
        evaluator = EvaluationPlugin(
            accuracy_metrics(minibatch=True, experience=True, stream=True),
            forgetting_metrics(experience=True, stream=True),
            loss_metrics(minibatch=True, experience=True, stream=True),
            loggers=[TextLogger(handle), CSVLogger(str(tmp_path / "csv")),
                     TensorboardLogger(str(tmp_path / "tb"))],
        )
        strategy = _strategy(evaluator=evaluator)
        for i, exp in enumerate(small_stream.train_stream[:2]):
            strategy.train(exp)
            results = strategy.eval(small_stream.test_stream[: i + 1])
    assert 0.0 <= results["Top1_Acc_Stream/eval_phase/test_stream/Task000"] <= 1.0
    assert "StreamForgetting/eval_phase/test_stream" in results
    # The logged loss is the negative joint bound in nats: hundreds for MNIST.
    assert 50 < results["Loss_Stream/eval_phase/test_stream/Task000"] < 2000
    assert "Top1_Acc_Stream" in text.read_text()
    assert (tmp_path / "csv" / "eval_results.csv").exists() and any((tmp_path / "tb").iterdir())


def test_plugins_attach_to_a_plain_avalanche_naive(small_stream):
    model = LifelongVAE(hidden_dim=HIDDEN)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                     criterion=JointBoundLoss(), train_mb_size=64, train_epochs=1,
                     plugins=[TeacherSwapPlugin(), TeacherReplayPlugin(), PosteriorConsistencyPlugin(),
                              InformationRestrictionPlugin()],
                     evaluator=EvaluationPlugin(loss_metrics(epoch=True), loggers=[]))
    for exp in small_stream.train_stream[:2]:
        strategy.train(exp)
    assert model.discrete_dim == 2 and strategy.teacher.discrete_dim == 1
    assert strategy.replay_batch is not None and {"consistency", "information"} <= set(strategy.loss_terms)
    # Loss weights and a replay temperature reach only the LVAE templates' criterion:
    # under Avalanche's Naive they would be ignored, so the plugin refuses to start.
    for options, missing in [(dict(mixing="loss_weights"), "mb_sample_weights"),
                             (dict(temperature=0.5), "mb_reconstruction_targets"),
                             (dict(distillation_temperature=2.0), "mb_class_temperatures")]:
        plain = Naive(model=LifelongVAE(hidden_dim=HIDDEN), optimizer=None, criterion=JointBoundLoss(),
                      plugins=[TeacherReplayPlugin(**options)], evaluator=EvaluationPlugin(loggers=[]))
        with pytest.raises(ValueError, match=f"sets {missing}, which Naive's criterion would ignore"):
            plain.train(small_stream.train_stream[0])


def _stream_with(x, y):
    return benchmark_from_tensors([(x, y)], [(x, y)])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x, y: (x * 255, y), "divide by 255"),
        (lambda x, y: ((x - 0.1307) / 0.3081, y), "ToTensor"),
        (lambda x, y: (x[:, :, :20, :20].contiguous(), y), "wrong image shape"),
        (lambda x, y: (x, y + 10), "num_classes"),
        (lambda x, y: (x[:0], y[:0]), "no samples"),
    ],
)
@pytest.mark.parametrize("preloaded", [True, False], ids=["preloaded", "avalanche_loader"])
def test_bad_experiences_are_rejected_before_training(make, message, preloaded, monkeypatch):
    if not preloaded:  # as for data with transforms: Avalanche's loader and a validation pass
        monkeypatch.setattr("avalanche_lvae.training.is_tensor_backed", lambda data: False)
    x, y = make(torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    strategy = _strategy()
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        strategy.train(_stream_with(x, y).train_stream[0])
    assert all(torch.equal(before[k], v) for k, v in strategy.model.state_dict().items())


def test_non_finite_loss_stops_training_and_leaves_the_teacher_intact(small_stream):
    RNGManager.set_random_seeds(0)
    strategy = _strategy()
    strategy.train(small_stream.train_stream[0])
    trained = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    strategy.optimizer.param_groups[0]["lr"] = 1e6
    with pytest.raises(NonFiniteLossError, match=r"experience 1, iteration \d+.*(term|non-finite)") as info:
        strategy.train(small_stream.train_stream[1])
    assert "teacher" in str(info.value)
    teacher = strategy.teacher
    assert all(torch.isfinite(p).all() for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), trained.values()))


def test_strategy_rejects_bad_models_and_hyperparameters():
    with pytest.raises(ValueError, match="LifelongVAE"):
        LifelongVAEStrategy(model=torch.nn.Linear(2, 2), optimizer=None)
    for kwargs, name in [(dict(consistency_weight=-1.0), "consistency_weight"),
                         (dict(info_weight=float("nan")), "info_weight"),
                         (dict(replay_size=0), "replay_size"), (dict(info_samples=-3), "info_samples"),
                         (dict(replay_label_source="true"), "label_source"),
                         (dict(replay_temperature=0.0), "temperature")]:
        with pytest.raises(ValueError, match=name):
            _strategy(**kwargs)
