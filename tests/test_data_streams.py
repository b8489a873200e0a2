"""Tests of dataset discovery/loading (avalanche_lvae.data) and streams (avalanche_lvae.streams).

Streams are built with small ``max_*_per_experience`` caps where the full size
is not the point, so the whole file runs in well under a minute on 2 cores.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from avalanche_lvae import data as data_mod
from avalanche_lvae.data import (
    DATASET_NAMES,
    ENV_VAR,
    RAW_FILES,
    DatasetNotFoundError,
    dataset_roots,
    default_dataset_root,
    load_tensors,
    require_dataset,
)
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
@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection (and name lookup) fails, as on a machine without internet."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _isolate(monkeypatch, tmp_path):
    """Point LVAE_DATA_DIR, the shared folder and Avalanche's location at empty folders under tmp_path."""
    for folder in ("arg", "env", "shared"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setattr(data_mod, "_SHARED_DATASETS", tmp_path / "shared")
    monkeypatch.setattr(data_mod, "_avalanche_location", lambda name: tmp_path / "avalanche" / name)
    return tmp_path


@pytest.fixture
def isolated_roots(monkeypatch, tmp_path):
    return _isolate(monkeypatch, tmp_path)


def _fake_copy(root, name, files=RAW_FILES):
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in files:
        (raw / f).write_bytes(b"")


def test_search_order_and_defaults(isolated_roots, monkeypatch):
    tmp = isolated_roots
    assert dataset_roots("MNIST", tmp / "arg") == [tmp / "arg", tmp / "env", tmp / "shared",
                                                    tmp / "avalanche" / "MNIST"]
    assert dataset_roots("MNIST", tmp / "env") == [tmp / "env", tmp / "shared", tmp / "avalanche" / "MNIST"]
    monkeypatch.delenv(ENV_VAR)
    (tmp / "shared").rmdir()  # the shared folder is searched only when it exists
    assert dataset_roots("FashionMNIST") == [tmp / "avalanche" / "FashionMNIST"]
    # No copy anywhere: the default root is where the dataset would be downloaded.
    assert default_dataset_root("MNIST") == tmp / "avalanche" / "MNIST"


def test_default_locations_are_the_checkouts_and_avalanches():
    from avalanche.benchmarks.datasets.dataset_utils import default_dataset_location

    assert data_mod._SHARED_DATASETS == (REPO_ROOT / ".." / "shared" / "datasets").resolve()
    # The folders Avalanche's own SplitMNIST / SplitFMNIST download to, so one download serves both.
    assert data_mod._avalanche_location("MNIST") == Path(default_dataset_location("mnist")).expanduser()
    assert data_mod._avalanche_location("FashionMNIST") == Path(default_dataset_location("fashionmnist")).expanduser()


def test_first_folder_with_a_complete_copy_is_used(isolated_roots, no_network):
    tmp = isolated_roots
    _fake_copy(tmp / "arg", "MNIST", RAW_FILES[:3])  # incomplete: skipped
    _fake_copy(tmp / "shared", "MNIST")
    _fake_copy(tmp / "avalanche" / "MNIST", "MNIST")
    assert require_dataset("MNIST", tmp / "arg") == tmp / "shared"
    assert default_dataset_root("MNIST") == tmp / "shared"
    _fake_copy(tmp / "env", "MNIST")
    assert require_dataset("MNIST", tmp / "arg") == tmp / "env"
    _fake_copy(tmp / "arg", "MNIST")
    assert require_dataset("MNIST", tmp / "arg") == tmp / "arg"


def test_missing_dataset_offline_gives_one_line_error(isolated_roots, no_network):
    tmp = isolated_roots
    _fake_copy(tmp / "arg", "MNIST", RAW_FILES[:1])
    with pytest.raises(DatasetNotFoundError) as info:
        require_dataset("MNIST", tmp / "arg")
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert "\n" not in msg and info.value.__cause__ is None and info.value.__suppress_context__
    for folder in ("arg", "env", "shared", "avalanche/MNIST"):
        assert str(tmp / folder / "MNIST" / "raw") in msg
    assert ENV_VAR in msg and "dataset_root=" in msg and all(f in msg for f in RAW_FILES)
    assert "network access blocked by the test" in msg  # torchvision tried to download, and failed
    # The streams report it the same way.
    with pytest.raises(DatasetNotFoundError, match=ENV_VAR) as info:
        permuted_mnist(n_experiences=2)
    assert str(tmp / "env" / "MNIST" / "raw") in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="FashionMNIST"):
        split_fmnist(dataset_root=tmp / "arg")


def test_local_copy_is_read_without_network(data_root, no_network, monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    def no_download(self):
        raise AssertionError("torchvision's download was called although a local copy exists")

    monkeypatch.setattr(tvd.MNIST, "download", no_download)  # FashionMNIST inherits it
    for name in DATASET_NAMES:
        # An empty dataset_root= falls through to the local copy.
        root = require_dataset(name, tmp_path)
        assert root == require_dataset(name) and (root / name / "raw").is_dir()
        # Read by torchvision past the per-process cache, so the files really are opened here.
        x, y = data_mod._load_cached.__wrapped__(name, False, str(root))
        assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,) and y.dtype == torch.int64
        _check_pixels(x)
        assert torch.equal(y, getattr(tvd, name)(str(root), train=False).targets)


def test_download_goes_to_avalanches_location(data_root, monkeypatch, tmp_path):
    import shutil

    import torchvision.datasets as tvd

    source = require_dataset("FashionMNIST")
    tmp = _isolate(monkeypatch, tmp_path)
    calls = []

    def fake_download(self):  # stands in for the network: copies the local files where torchvision would write
        calls.append(self.raw_folder)
        shutil.copytree(source / type(self).__name__ / "raw", self.raw_folder, dirs_exist_ok=True)

    monkeypatch.setattr(tvd.MNIST, "download", fake_download)
    target = tmp / "avalanche" / "FashionMNIST"
    assert require_dataset("FashionMNIST") == target
    assert calls == [str(target / "FashionMNIST" / "raw")]
    assert require_dataset("FashionMNIST") == target and len(calls) == 1  # found there from now on
    y = data_mod._load_cached.__wrapped__("FashionMNIST", False, str(target))[1]
    assert torch.equal(y, load_tensors("FashionMNIST", False, source)[1])


def test_a_given_folder_that_does_not_exist_is_reported(isolated_roots, monkeypatch):
    tmp = isolated_roots
    with pytest.raises(DatasetNotFoundError) as info:
        load_tensors("MNIST", True, tmp / "typo")
    msg = str(info.value)
    assert msg.startswith(f"dataset_root={tmp / 'typo'} is not a folder") and "\n" not in msg
    assert ENV_VAR in msg and "MNIST/raw" in msg
    monkeypatch.setenv(ENV_VAR, str(tmp / "typo"))
    with pytest.raises(DatasetNotFoundError, match=f"^{ENV_VAR}=.*typo is not a folder"):
        require_dataset("FashionMNIST")
    monkeypatch.setenv(ENV_VAR, "")  # set but empty: not used
    assert dataset_roots("MNIST") == [tmp / "shared", tmp / "avalanche" / "MNIST"]


def test_unknown_dataset_name_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="MNIST"):
        require_dataset("mnist", tmp_path)


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
    ref = SplitFMNIST(10, seed=0, dataset_root=require_dataset("FashionMNIST"), train_transform=ToTensor(),
                      eval_transform=ToTensor())
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
