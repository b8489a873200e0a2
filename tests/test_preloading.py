"""The pre-loaded training loader: same minibatches as Avalanche's, used only where that is exact."""

import torch
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from avalanche.core import SupervisedPlugin
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin
from torchvision import transforms

import pytest

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae import preloading
from avalanche_lvae.preloading import (PreloadedTaskBalancedDataLoader, device_budget, is_tensor_backed,
                                      placement)
from avalanche_lvae.streams import benchmark_from_tensors, permuted_mnist, split_fmnist


@pytest.fixture(scope="module")
def tensor_stream(data_root):
    return permuted_mnist(n_experiences=2, dataset_root=data_root, max_train_per_experience=600,
                          max_test_per_experience=50)


def test_only_transform_free_tensor_data_count_as_tensor_backed(tensor_stream, data_root):
    data = tensor_stream.train_stream[1].dataset
    assert is_tensor_backed(data.train()) and is_tensor_backed(data.eval())
    # A transform anywhere in the active group (here random augmentation) must keep Avalanche's loader.
    augmented = data.replace_current_transform_group(transforms.RandomRotation(10))
    assert not is_tensor_backed(augmented)
    # nc_benchmark maps class ids with a frozen target transform: conservatively not pre-loaded.
    split = split_fmnist(n_experiences=5, dataset_root=data_root, max_train_per_experience=30,
                         max_test_per_experience=10)
    assert not is_tensor_backed(split.train_stream[0].dataset.train())
    assert not is_tensor_backed(torch.utils.data.TensorDataset(torch.zeros(3)))  # not an Avalanche dataset


def test_preloaded_loader_yields_avalanches_minibatches_and_rng_draws(tensor_stream):
    data = tensor_stream.train_stream[1].dataset.train()
    batches, states = {}, {}
    for cls in (TaskBalancedDataLoader, PreloadedTaskBalancedDataLoader):
        loader = cls(data, oversample_small_groups=True, batch_size=64, shuffle=True)
        torch.manual_seed(3)  # after construction: the pre-loading read is one DataLoader pass, one draw
        batches[cls] = [batch for _ in range(2) for batch in loader]  # two epochs: two shuffles
        states[cls] = torch.get_rng_state()
    reference, preloaded = batches[TaskBalancedDataLoader], batches[PreloadedTaskBalancedDataLoader]
    assert len(reference) == len(preloaded) == 2 * 10
    for expected, got in zip(reference, preloaded):
        assert isinstance(got, list) and len(got) == len(expected) == 3
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert not torch.equal(reference[0][1], reference[10][1])  # the second epoch was reshuffled
    assert torch.equal(states[TaskBalancedDataLoader], states[PreloadedTaskBalancedDataLoader])
    with pytest.raises(ValueError, match="tensor-backed"):
        PreloadedTaskBalancedDataLoader(data.replace_current_transform_group(transforms.RandomRotation(10)),
                                        batch_size=64)


class LoaderType(SupervisedPlugin):
    """Records the class of the training loader of every experience, and where the pre-loaded one holds its data."""

    def __init__(self):
        super().__init__()
        self.types, self.devices = set(), set()

    def before_training_epoch(self, strategy, **kwargs):
        self.types.add(type(strategy.dataloader))
        self.devices.add(getattr(strategy.dataloader, "device", "not pre-loaded"))


def _train(stream):
    RNGManager.set_random_seeds(0)
    model, recorder = LifelongVAE(hidden_dim=64), LoaderType()
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                   train_mb_size=64, train_epochs=2, evaluator=EvaluationPlugin(loggers=[]),
                                   plugins=[recorder])
    for exp in stream.train_stream:
        strategy.train(exp)
    return strategy.model.state_dict(), recorder


def test_strategy_trains_identically_with_either_loader(tensor_stream, monkeypatch):
    preloaded_state, preloaded = _train(tensor_stream)
    monkeypatch.setattr("avalanche_lvae.training.is_tensor_backed", lambda data: False)
    reference_state, reference = _train(tensor_stream)
    assert preloaded.types == {PreloadedTaskBalancedDataLoader} and preloaded.devices == {None}  # CPU: host tensors
    assert reference.types == {TaskBalancedDataLoader}
    assert all(torch.equal(preloaded_state[k], reference_state[k]) for k in reference_state)


def test_data_with_transforms_keep_avalanches_loader():
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    stream = benchmark_from_tensors([(x, y)], [(x, y)])
    experience = stream.train_stream[0]
    experience.dataset = experience.dataset.replace_current_transform_group(transforms.RandomHorizontalFlip())
    model, recorder = LifelongVAE(hidden_dim=32), LoaderType()
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()), train_mb_size=16,
                                   evaluator=EvaluationPlugin(loggers=[]), plugins=[recorder])
    strategy.train(experience)
    assert recorder.types == {TaskBalancedDataLoader}


def test_the_experience_moves_to_the_device_only_when_it_fits_the_budget(monkeypatch):
    x, y = torch.zeros(100), torch.zeros(12, dtype=torch.long)  # 400 + 96 bytes
    assert device_budget("cpu") is None and placement([x, y], "cpu") is None  # CPU: nothing moves, whatever the size
    asked = []
    # A GPU with 1000 bytes free of 4000: the budget is DEVICE_MEMORY_FRACTION (one half) of the free bytes.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: asked.append(device) or (1000, 4000))
    assert preloading.DEVICE_MEMORY_FRACTION == 0.5 and device_budget("cuda:1") == 500
    assert asked == [torch.device("cuda:1")]
    assert placement([x, y], "cuda:1") == torch.device("cuda:1")  # 496 bytes <= 500
    assert placement([x, torch.zeros(13, dtype=torch.long)], "cuda:1") is None  # 504 bytes > 500: host tensors
    assert placement([torch.zeros(125)], torch.device("cuda")) == torch.device("cuda")  # exactly the budget


def test_a_run_with_the_data_placed_on_the_device_trains_identically(tensor_stream, monkeypatch):
    # CPU has no device budget; granting one runs the placement path (tensors moved to the strategy's device,
    # minibatches indexed there, no pinning) against a budget the experience does not fit (host tensors).
    monkeypatch.setattr(preloading, "device_budget", lambda device: 1 << 40)
    placed_state, placed = _train(tensor_stream)
    monkeypatch.setattr(preloading, "device_budget", lambda device: 1000)  # a 600-image experience: 1.9 MB
    host_state, host = _train(tensor_stream)
    assert placed.devices == {torch.device("cpu")} and host.devices == {None}
    assert all(torch.equal(placed_state[k], host_state[k]) for k in host_state)
    # Worker processes cannot share device tensors: with workers the data stay on the host even if they fit.
    loader = PreloadedTaskBalancedDataLoader(tensor_stream.train_stream[0].dataset.train(), batch_size=64,
                                             num_workers=2, device="cpu")
    assert loader.device is None
