"""The training step reads nothing back from the device except at the non-finite check interval.

A device-to-host read in PyTorch goes through one of ``Tensor.item``,
``tolist``, ``__bool__`` (``if tensor:``), ``__int__``, ``__float__``,
``cpu`` or ``numpy``. These tests count every such call made while the LVAE
templates train (on CPU, where the same calls would each stop a GPU), per
training iteration, with teacher replay, the consistency term and L_I active.
"""

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy, NonFiniteLossError
from avalanche_lvae.streams import benchmark_from_tensors

SYNCING = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy")
BATCH, ROWS, INTERVAL = 32, 256, 4  # 8 iterations per epoch


class SyncCounter:
    """Counts calls of the syncing ``torch.Tensor`` methods while ``active``."""

    def __init__(self, monkeypatch):
        self.calls, self.active = [], False
        for name in SYNCING:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active:
                self.calls.append(name)
            return original(tensor, *args, **kwargs)
        return counted


class PerIteration(SupervisedPlugin):
    """Syncs made between the start and the end of each training iteration (plugins included)."""

    def __init__(self, counter):
        super().__init__()
        self.counter, self.per_iteration = counter, []

    def before_training_iteration(self, strategy, **kwargs):
        self.counter.calls.clear()
        self.counter.active = True

    def after_training_iteration(self, strategy, **kwargs):
        self.counter.active = False
        self.per_iteration.append((strategy.clock.train_exp_iterations, list(self.counter.calls)))


def _stream():
    generator = torch.Generator().manual_seed(0)
    parts = [(torch.rand(ROWS, 1, 28, 28, generator=generator), torch.randint(0, 10, (ROWS,), generator=generator))
             for _ in range(2)]
    return benchmark_from_tensors(parts, [(x[:64], y[:64]) for x, y in parts])


def _strategy(plugins, **kwargs):
    RNGManager.set_random_seeds(0)
    model = LifelongVAE(hidden_dim=64)
    # SGD: Adam keeps its step count in a CPU tensor by design (read with .item(),
    # never a device sync, even on a GPU), which these counters would also count.
    return LifelongVAEStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1e-3),
                               train_mb_size=BATCH, train_epochs=1, eval_mb_size=64, plugins=plugins,
                               evaluator=EvaluationPlugin(loggers=[]), non_finite_check_interval=INTERVAL, **kwargs)


def test_training_iterations_sync_only_at_the_check_interval(monkeypatch):
    counter = SyncCounter(monkeypatch)
    recorder = PerIteration(counter)
    strategy = _strategy([recorder], replay_temperature=0.8, continuous_consistency_weight=0.5, info_weight=0.01)
    for experience in _stream().train_stream:
        recorder.per_iteration.clear()
        strategy.train(experience)
        assert len(recorder.per_iteration) == ROWS // BATCH
        for iteration, calls in recorder.per_iteration:
            # 0-based: Avalanche's clock counts the iteration after the other plugins
            expected = ["tolist"] if (iteration + 1) % INTERVAL == 0 else []
            assert calls == expected, (experience.current_experience, iteration, calls)
    assert strategy.teacher is not None and strategy.replay_batch is not None  # replay and consistency ran


def test_non_finite_term_is_named_with_its_iteration_between_checks():
    strategy = _strategy([], info_weight=0.01)
    stream = _stream()
    strategy.train(stream.train_stream[0])

    class PoisonInformation(SupervisedPlugin):
        """Makes L_I NaN at iteration 5 of the experience (the check runs at 7, then at the epoch end)."""

        def before_backward(self, strategy, **kwargs):
            if strategy.clock.train_exp_iterations == 5:
                strategy.loss_terms["information"] = strategy.loss_terms["information"] * float("nan")
                strategy.loss = strategy.loss + strategy.loss_terms["information"]

    strategy.plugins.append(PoisonInformation())
    with pytest.raises(NonFiniteLossError) as info:
        strategy.train(stream.train_stream[1])
    message = str(info.value)
    assert "experience 1, iteration 5 of that experience: information, total loss went non-finite" in message
    assert "Detected at iteration 7" in message and "took 2 update(s)" in message
    assert all(torch.isfinite(p).all() for p in strategy.teacher.parameters())


def test_check_interval_one_stops_before_the_update():
    strategy = _strategy([])
    strategy.non_finite_check_interval = 1
    stream = _stream()
    strategy.train(stream.train_stream[0])
    before = {name: p.clone() for name, p in strategy.model.named_parameters()}

    class PoisonFirst(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            strategy.loss = strategy.loss * float("inf")

    strategy.plugins.append(PoisonFirst())
    with pytest.raises(NonFiniteLossError, match="iteration 0 of that experience: total loss went non-finite. "
                                                 "Training stopped before its update"):
        strategy.train(stream.train_stream[1])
    # z_d grew at the boundary (new layers), every other weight is untouched
    for name, p in strategy.model.named_parameters():
        if name in before and before[name].shape == p.shape and "discrete" not in name:
            assert torch.equal(before[name], p), name


def test_encoder_divergence_is_named():
    strategy = _strategy([])
    with torch.no_grad():
        strategy.model.continuous_head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="encoder continuous_loc"):
        strategy.train(_stream().train_stream[0])
