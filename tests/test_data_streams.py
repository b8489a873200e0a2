"""Tests of dataset discovery/loading (avalanche_lvae.data) and streams (avalanche_lvae.streams).

Streams are built with small ``max_*_per_experience`` caps where the full size
is not the point, so the whole file runs in well under a minute on 2 cores.
"""

import gzip
from pathlib import Path

import pytest
import torch
from torch import nn

from avalanche_lvae import data as data_mod
from avalanche_lvae.data import ENV_VAR, RAW_FILES, default_dataset_root, load_tensors, require_dataset
from avalanche_lvae.streams import (
    experience_tensors,
    mnist_fashion_permuted,
    permuted_mnist,
    pixel_permutations,
    split_fmnist,
    split_mnist,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _check_pixels(x):
    assert x.dtype == torch.float32
    assert tuple(x.shape[1:]) == (1, 28, 28)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() > 0.5  # really [0, 1] images, not all-zero


# --------------------------------------------------------------------------- data.py
def test_default_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert default_dataset_root() == tmp_path


def test_default_root_finds_shared_datasets(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    # The default is <repo root>/../shared/datasets ...
    assert data_mod._SHARED_DATASETS == (REPO_ROOT / ".." / "shared" / "datasets").resolve()
    # ... used whenever that folder exists (checked with a stand-in, so the test
    # does not depend on where this checkout lives).
    monkeypatch.setattr(data_mod, "_SHARED_DATASETS", tmp_path)
    assert default_dataset_root() == tmp_path


def test_default_root_falls_back_to_avalanche(monkeypatch, tmp_path):
    from avalanche.benchmarks.datasets.dataset_utils import default_dataset_location

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(data_mod, "_SHARED_DATASETS", tmp_path / "does-not-exist")
    assert default_dataset_root() == Path(default_dataset_location("")).expanduser()


def test_missing_dataset_error_names_folder_and_env(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        require_dataset("MNIST", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert ENV_VAR in msg and "dataset_root" in msg
    assert all(f in msg for f in RAW_FILES)


def test_streams_report_missing_data_via_env(monkeypatch, tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / RAW_FILES[0]).write_bytes(b"")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        permuted_mnist(n_experiences=2)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and ENV_VAR in msg
    assert RAW_FILES[0] + "," not in msg  # the present file is not reported missing
    with pytest.raises(FileNotFoundError, match="FashionMNIST"):
        split_fmnist(dataset_root=tmp_path)


def test_unknown_dataset_name_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="MNIST"):
        require_dataset("mnist", tmp_path)


def _write_idx_gz(path, array):
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


def test_gz_only_raw_folder_is_accepted(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 0, 9], dtype=torch.uint8)
    for prefix in ("train", "t10k"):
        _write_idx_gz(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx_gz(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    assert require_dataset("FashionMNIST", tmp_path) == tmp_path
    x, y = load_tensors("FashionMNIST", False, tmp_path)
    assert x.shape == (3, 1, 28, 28) and y.dtype == torch.int64
    assert torch.allclose(x[:, 0] * 255, images.float())
    assert y.tolist() == [3, 0, 9]


def test_load_tensors_full_split(data_root):
    x, y = load_tensors("MNIST", False, data_root)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,) and y.dtype == torch.int64
    _check_pixels(x)
    assert load_tensors("MNIST", False) is not None  # root=None resolves to the same data
    assert load_tensors("MNIST", False)[0] is x  # cached in-process


# --------------------------------------------------------------------------- permuted MNIST
def test_permuted_mnist_structure(data_root):
    bm = permuted_mnist(n_experiences=4, seed=0, max_train_per_experience=100, max_test_per_experience=50)
    assert len(bm.train_stream) == 4 and len(bm.test_stream) == 4
    perms = pixel_permutations(3, seed=0)
    for stream, n, train in ((bm.train_stream, 100, True), (bm.test_stream, 50, False)):
        x_mnist, y_mnist = load_tensors("MNIST", train, data_root)
        x0, y0 = experience_tensors(stream[0])
        assert torch.equal(x0, x_mnist[:n]) and torch.equal(y0, y_mnist[:n])  # plain MNIST first
        sorted0 = x0.flatten(1).sort(dim=1).values
        for k, exp in enumerate(stream):
            x, y = experience_tensors(exp)
            _check_pixels(x)
            assert exp.current_experience == k and exp.task_label == 0
            assert set(exp.classes_in_this_experience) == set(y.tolist())
            if train:
                assert sorted(exp.classes_in_this_experience) == list(range(10))
            assert torch.equal(y, y0)
            if k:
                assert not torch.equal(x, x0)
                assert torch.equal(x.flatten(1).sort(dim=1).values, sorted0)  # same pixels, moved
                assert torch.equal(x.flatten(1), x0.flatten(1)[:, perms[k - 1]])


def test_permutations_depend_on_seed_only():
    a, b = pixel_permutations(2, seed=3), pixel_permutations(2, seed=3)
    c = pixel_permutations(2, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert sorted(a[0].tolist()) == list(range(784)) and not torch.equal(a[0], a[1])
    state = torch.get_rng_state()
    pixel_permutations(1, seed=0)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


def test_permuted_mnist_seed(data_root):
    def exp1(seed):
        bm = permuted_mnist(n_experiences=2, seed=seed, max_train_per_experience=20, max_test_per_experience=5)
        return experience_tensors(bm.train_stream[1])[0]

    assert torch.equal(exp1(0), exp1(0))
    assert not torch.equal(exp1(0), exp1(1))


def test_permuted_mnist_full_size(data_root):
    bm = permuted_mnist()
    assert len(bm.train_stream) == 5
    assert [len(e.dataset) for e in bm.train_stream] == [60000] * 5
    assert [len(e.dataset) for e in bm.test_stream] == [10000] * 5


# --------------------------------------------------------------------------- split FashionMNIST
def test_split_fmnist_default_matches_avalanche_class_order(data_root):
    from avalanche.benchmarks.classic import SplitFMNIST
    from torchvision.transforms import ToTensor

    bm = split_fmnist()
    assert len(bm.train_stream) == 10 and len(bm.test_stream) == 10
    ref = SplitFMNIST(10, seed=0, dataset_root=data_root, train_transform=ToTensor(), eval_transform=ToTensor())
    assert bm.classes_order == ref.classes_order
    seen = []
    for train_exp, test_exp in zip(bm.train_stream, bm.test_stream):
        assert len(train_exp.classes_in_this_experience) == 1
        assert train_exp.classes_in_this_experience == test_exp.classes_in_this_experience
        assert len(train_exp.dataset) == 6000 and len(test_exp.dataset) == 1000
        seen += train_exp.classes_in_this_experience
        assert train_exp.task_label == 0
    assert sorted(seen) == list(range(10))
    x, y = experience_tensors(bm.test_stream[3])
    _check_pixels(x)
    assert set(y.tolist()) == set(bm.test_stream[3].classes_in_this_experience)


def test_split_fmnist_caps_and_class_order(data_root):
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    bm = split_fmnist(n_experiences=5, fixed_class_order=order, max_train_per_experience=30,
                      max_test_per_experience=7)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream] == [
        [8, 9], [6, 7], [4, 5], [2, 3], [0, 1]]
    assert [len(e.dataset) for e in bm.train_stream] == [30] * 5
    assert [len(e.dataset) for e in bm.test_stream] == [7] * 5
    _check_pixels(experience_tensors(bm.train_stream[0])[0])


# --------------------------------------------------------------------------- split MNIST
def test_split_mnist_default_matches_avalanche_split_mnist(data_root):
    from avalanche.benchmarks.classic import SplitMNIST
    from torchvision.transforms import ToTensor

    bm = split_mnist()
    ref = SplitMNIST(5, seed=0, dataset_root=data_root, train_transform=ToTensor(), eval_transform=ToTensor())
    assert len(bm.train_stream) == 5 and len(bm.test_stream) == 5
    assert bm.classes_order == ref.classes_order
    for mine, theirs in zip(bm.train_stream, ref.train_stream):
        assert sorted(mine.classes_in_this_experience) == sorted(theirs.classes_in_this_experience)
        assert len(mine.classes_in_this_experience) == 2
        assert len(mine.dataset) == len(theirs.dataset)
        assert mine.task_label == 0
    for mine, theirs in zip(bm.test_stream, ref.test_stream):
        assert len(mine.dataset) == len(theirs.dataset)
    x, y = experience_tensors(bm.test_stream[2])
    _check_pixels(x)
    assert set(y.tolist()) == set(bm.test_stream[2].classes_in_this_experience)


def test_split_mnist_caps_one_class_per_experience_and_fixed_order(data_root):
    bm = split_mnist(n_experiences=10, max_train_per_experience=20, max_test_per_experience=5)
    assert all(len(e.classes_in_this_experience) == 1 for e in bm.train_stream)
    assert [len(e.dataset) for e in bm.train_stream] == [20] * 10
    assert [len(e.dataset) for e in bm.test_stream] == [5] * 10
    order = list(range(10))
    bm = split_mnist(fixed_class_order=order, max_train_per_experience=30)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream] == [
        [0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    xm, ym = load_tensors("MNIST", True, data_root)
    x, y = experience_tensors(bm.train_stream[0])
    first = torch.nonzero(ym < 2).flatten()[:30]
    # nc_benchmark groups an experience's images by class; compare as multisets.
    mine, want = torch.sort(x.flatten(1).sum(1)).indices, torch.sort(xm[first].flatten(1).sum(1)).indices
    assert torch.equal(x[mine], xm[first][want]) and torch.equal(y[mine], ym[first][want])


# --------------------------------------------------------------------------- MNIST -> FMNIST -> permuted
def test_mnist_fashion_permuted(data_root):
    bm = mnist_fashion_permuted(seed=0, max_train_per_experience=40, max_test_per_experience=10)
    assert len(bm.train_stream) == 3 and len(bm.test_stream) == 3
    xs = [experience_tensors(e) for e in bm.train_stream]
    xm, ym = load_tensors("MNIST", True, data_root)
    xf, yf = load_tensors("FashionMNIST", True, data_root)
    assert torch.equal(xs[0][0], xm[:40]) and torch.equal(xs[1][0], xf[:40])
    assert torch.equal(xs[1][1], yf[:40])  # FashionMNIST keeps labels 0-9
    perm = pixel_permutations(1, seed=0)[0]
    assert torch.equal(xs[2][0].flatten(1), xm[:40].flatten(1)[:, perm]) and torch.equal(xs[2][1], ym[:40])
    for x, _ in xs:
        _check_pixels(x)
    assert all(set(e.classes_in_this_experience) <= set(range(10)) for e in bm.train_stream)


# --------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    "call",
    [
        lambda: permuted_mnist(n_experiences=0),
        lambda: permuted_mnist(n_experiences=2.5),
        lambda: permuted_mnist(n_experiences=True),
        lambda: permuted_mnist(n_experiences="5"),
        lambda: permuted_mnist(seed=-1),
        lambda: permuted_mnist(max_train_per_experience=0),
        lambda: permuted_mnist(max_test_per_experience=-3),
        lambda: split_fmnist(n_experiences=3),
        lambda: split_fmnist(n_experiences=20),
        lambda: split_fmnist(fixed_class_order=[0] * 10),
        lambda: split_fmnist(fixed_class_order=list(range(9))),
        lambda: split_fmnist(max_train_per_experience=1.5),
        lambda: split_mnist(n_experiences=3),
        lambda: split_mnist(seed=-1),
        lambda: split_mnist(fixed_class_order=[1] * 10),
        lambda: split_mnist(max_test_per_experience=0),
        lambda: mnist_fashion_permuted(max_test_per_experience=0),
        lambda: mnist_fashion_permuted(seed="a"),
    ],
)
def test_bad_arguments_raise_value_error(call, tmp_path, monkeypatch):
    # An empty data folder proves the arguments are checked before any file access.
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------- Avalanche integration
def test_streams_train_with_avalanche_strategy_and_metrics(data_root):
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    torch.manual_seed(0)
    bm = permuted_mnist(n_experiences=2, max_train_per_experience=128, max_test_per_experience=64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    evaluator = EvaluationPlugin(accuracy_metrics(stream=True), forgetting_metrics(experience=True), loggers=[])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=1, eval_mb_size=64,
                     evaluator=evaluator)
    for i, exp in enumerate(bm.train_stream):
        strategy.train(exp)
        results = strategy.eval(bm.test_stream[: i + 1])
    acc = [v for k, v in results.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream")]
    assert len(acc) == 1 and 0.0 <= acc[0] <= 1.0
    assert any(k.startswith("ExperienceForgetting") for k in results)
