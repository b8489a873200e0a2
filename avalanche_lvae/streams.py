"""The papers' continual-learning streams as ordinary Avalanche 0.6 benchmarks.

Why not ``avalanche.benchmarks.classic.PermutedMNIST`` / ``SplitMNIST`` / ``SplitFMNIST`` as is:

* their default transforms ``Normalize`` pixels to about [-0.42, 2.82], which
  a Bernoulli decoder cannot model; every stream here yields pixels in [0, 1];
* they convert every sample through PIL on every epoch (about 6x slower to
  iterate than tensors here), and their ``nc_benchmark`` re-seeds torch's
  global RNG; here the splits are loaded once (:func:`avalanche_lvae.data.load_tensors`),
  permuted in bulk, and wrapped as Avalanche datasets without transforms;
* ``PermutedMNIST`` permutes the first experience too, whereas the papers
  start from plain MNIST.

The returned objects are plain Avalanche benchmarks (``ClassificationScenario``
for :func:`permuted_mnist` / :func:`mnist_fashion_permuted`, ``NCScenario`` for
:func:`split_mnist` / :func:`split_fmnist`): experiences expose ``.dataset`` (with ``.targets`` and
``.targets_task_labels``; items are ``(x, y, task_label)``),
``.current_experience``, ``.classes_in_this_experience``, ``.task_label``, and
streams can be sliced (``benchmark.train_stream[: i + 1]``). All task labels
are 0 (one head, no task identity at test time).
"""

from __future__ import annotations

from numbers import Integral
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.data import TensorDataset

from avalanche.benchmarks import dataset_benchmark, nc_benchmark
from avalanche.benchmarks.utils import (
    ConstantSequence,
    DataAttribute,
    TaskAwareSupervisedClassificationDataset,
)

from .data import PathLike, load_tensors, require_dataset
from .preloading import read_tensors

__all__ = [
    "benchmark_from_tensors",
    "pixel_permutations",
    "permuted_mnist",
    "split_mnist",
    "split_fmnist",
    "mnist_fashion_permuted",
    "experience_tensors",
]

_N_PIXELS = 28 * 28
_N_CLASSES = 10


# --------------------------------------------------------------------------- checks
def _check_int(value, name: str, *, optional: bool = False, upper: Optional[int] = None):
    """Return ``value`` as an int, or raise ValueError naming the problem and the fix."""
    if value is None and optional:
        return None
    # bool is an Integral but n_experiences=True is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        what = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"{name} must be {what}, got {value!r}; pass e.g. {name}=5.")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value} is too large; use at most {upper}.")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}; pass e.g. seed=0.")
    return int(seed)


# --------------------------------------------------------------------------- helpers
def pixel_permutations(n: int, seed: int = 0, n_pixels: int = _N_PIXELS) -> List[torch.Tensor]:
    """Draw ``n`` fixed pixel permutations from ``seed``.

    A private ``torch.Generator`` is used, so the global RNG is left untouched
    and the k-th permutation depends only on ``(seed, k)``: the permutation of
    :func:`mnist_fashion_permuted` equals the first one of :func:`permuted_mnist`
    for the same seed.

    Returns:
        A list of ``n`` int64 tensors of shape ``[n_pixels]``.
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}.")
    gen = torch.Generator().manual_seed(_check_seed(seed))
    return [torch.randperm(n_pixels, generator=gen) for _ in range(int(n))]


def _permute(x: torch.Tensor, perm: Optional[torch.Tensor]) -> torch.Tensor:
    """Apply one pixel permutation to a whole ``[N, 1, 28, 28]`` batch at once."""
    if perm is None:
        return x  # shared, read-only: experiences never modify their data
    return x.flatten(1).index_select(1, perm).reshape(x.shape)


def _head(x: torch.Tensor, y: torch.Tensor, n: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Deterministic first-``n`` subset (the MNIST files are already shuffled)."""
    return (x, y) if n is None else (x[:n], y[:n])


def _as_dataset(x: torch.Tensor, y: torch.Tensor, task_label: int = 0):
    """Wrap in-memory tensors as an Avalanche classification dataset.

    ``targets`` (a plain list, so Avalanche can compute the class set) and a
    constant ``targets_task_labels`` attribute are what Avalanche's strategies,
    samplers and metrics read; ``use_in_getitem=True`` makes items
    ``(x, y, task_label)`` as Avalanche's training loop expects.
    """
    return TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[
            DataAttribute(y.tolist(), "targets"),
            DataAttribute(ConstantSequence(task_label, len(y)), "targets_task_labels", use_in_getitem=True),
        ],
    )


def benchmark_from_tensors(train: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                           test: Sequence[Tuple[torch.Tensor, torch.Tensor]]):
    """An Avalanche benchmark with one experience per ``(x, y)`` pair of images in [0, 1] and labels.

    Task label 0 everywhere, no transforms, so the LVAE templates pre-load it.
    """
    return dataset_benchmark([_as_dataset(x, y) for x, y in train], [_as_dataset(x, y) for x, y in test])


# --------------------------------------------------------------------------- streams
def permuted_mnist(
    n_experiences: int = 5,
    seed: int = 0,
    dataset_root: Optional[PathLike] = None,
    max_train_per_experience: Optional[int] = None,
    max_test_per_experience: Optional[int] = None,
):
    """Permuted MNIST as in LGM Exp. 5.2 / CCL-GM Sec. 3.

    Experience 0 is plain MNIST; experiences 1..n-1 apply the fixed pixel
    permutations ``pixel_permutations(n_experiences - 1, seed)`` to every
    image (train and test alike). Every experience holds all 10 classes with
    their original labels and task label 0.

    Args:
        n_experiences: number of experiences (default 5: MNIST + 4 permutations).
        seed: seed of the permutations (default 0).
        dataset_root: folder holding ``MNIST/raw``; default
            :func:`avalanche_lvae.data.default_dataset_root`.
        max_train_per_experience: keep only the first N training images of each
            experience (the same N images in every experience); None keeps 60k.
        max_test_per_experience: same for the 10k test images.

    Returns:
        An Avalanche ``ClassificationScenario`` built with ``dataset_benchmark``.
    """
    n_experiences = _check_int(n_experiences, "n_experiences")
    seed = _check_seed(seed)
    max_train = _check_int(max_train_per_experience, "max_train_per_experience", optional=True)
    max_test = _check_int(max_test_per_experience, "max_test_per_experience", optional=True)
    root = require_dataset("MNIST", dataset_root)
    xtr, ytr = _head(*load_tensors("MNIST", True, root), max_train)
    xte, yte = _head(*load_tensors("MNIST", False, root), max_test)
    perms = [None] + pixel_permutations(n_experiences - 1, seed)
    return benchmark_from_tensors(
        [(_permute(xtr, p), ytr) for p in perms], [(_permute(xte, p), yte) for p in perms]
    )


def _class_incremental(
    dataset: str,
    n_experiences: int,
    seed: int,
    dataset_root: Optional[PathLike],
    fixed_class_order: Optional[Sequence[int]],
    max_train_per_experience: Optional[int],
    max_test_per_experience: Optional[int],
):
    """Class-incremental stream over one 10-class torchvision dataset.

    Shared by :func:`split_mnist` and :func:`split_fmnist`: Avalanche's
    ``nc_benchmark`` with original class ids, built from in-memory [0, 1]
    tensors; the class order is the one ``nc_benchmark`` draws for ``seed``
    (drawn with a private generator, so torch's global RNG is not re-seeded).
    """
    n_experiences = _check_int(n_experiences, "n_experiences", upper=_N_CLASSES)
    if _N_CLASSES % n_experiences:
        raise ValueError(
            f"n_experiences={n_experiences} does not divide the 10 {dataset} classes; "
            "use 1, 2, 5 or 10."
        )
    seed = _check_seed(seed)
    max_train = _check_int(max_train_per_experience, "max_train_per_experience", optional=True)
    max_test = _check_int(max_test_per_experience, "max_test_per_experience", optional=True)
    if fixed_class_order is not None:
        order = [int(c) for c in fixed_class_order]
        if sorted(order) != list(range(_N_CLASSES)):
            raise ValueError(
                f"fixed_class_order must be a permutation of 0..9, got {list(fixed_class_order)!r}; "
                "e.g. fixed_class_order=list(range(10))."
            )
    else:
        # Same draw as NCScenario: torch.manual_seed(seed); torch.randperm(10).
        order = torch.randperm(_N_CLASSES, generator=torch.Generator().manual_seed(seed)).tolist()
    root = require_dataset(dataset, dataset_root)
    per_exp = _N_CLASSES // n_experiences
    groups = [order[i : i + per_exp] for i in range(0, _N_CLASSES, per_exp)]

    def subset(train: bool, n: Optional[int]):
        x, y = load_tensors(dataset, train, root)
        if n is None:
            return _as_dataset(x, y)
        # First n images of each experience, chosen before nc_benchmark splits
        # by class, so that every experience is capped independently.
        keep = torch.cat([torch.nonzero(torch.isin(y, torch.tensor(g))).flatten()[:n] for g in groups])
        keep = keep.sort().values
        return _as_dataset(x[keep], y[keep])

    return nc_benchmark(
        subset(True, max_train),
        subset(False, max_test),
        n_experiences=n_experiences,
        task_labels=False,
        shuffle=False,
        fixed_class_order=order,
    )


def split_mnist(
    n_experiences: int = 5,
    seed: int = 0,
    dataset_root: Optional[PathLike] = None,
    max_train_per_experience: Optional[int] = None,
    max_test_per_experience: Optional[int] = None,
    fixed_class_order: Optional[Sequence[int]] = None,
):
    """Class-incremental MNIST, the standard Split MNIST (5 experiences x 2 classes).

    Built like ``avalanche.benchmarks.classic.SplitMNIST(n_experiences, seed=seed)``
    (``nc_benchmark``, original class ids, the same class order for a seed) but
    from in-memory [0, 1] tensors instead of PIL images with ``Normalize``.
    Task labels are 0 (class-incremental: one head, no task identity at test time).

    Args:
        n_experiences: number of experiences, a divisor of 10 (default 5, two
            classes each, about 12k train / 2k test images per experience;
            10 gives one class per experience as in LGM App. 9.4).
        seed: seed of the class order (default 0); ignored when
            ``fixed_class_order`` is given.
        dataset_root: folder holding ``MNIST/raw``; default
            :func:`avalanche_lvae.data.default_dataset_root`.
        max_train_per_experience: keep only the first N training images (file
            order) of each experience; None keeps all.
        max_test_per_experience: same for the test images.
        fixed_class_order: a permutation of ``0..9`` giving the class order.

    Returns:
        An Avalanche ``NCScenario``.
    """
    return _class_incremental("MNIST", n_experiences, seed, dataset_root, fixed_class_order,
                              max_train_per_experience, max_test_per_experience)


def split_fmnist(
    n_experiences: int = 10,
    seed: int = 0,
    dataset_root: Optional[PathLike] = None,
    fixed_class_order: Optional[Sequence[int]] = None,
    max_train_per_experience: Optional[int] = None,
    max_test_per_experience: Optional[int] = None,
):
    """Class-incremental FashionMNIST (LGM Exp. 5.1: one class per experience).

    Built the way ``avalanche.benchmarks.classic.SplitFMNIST`` is built, i.e.
    with Avalanche's ``nc_benchmark`` and original class ids, but from
    in-memory [0, 1] tensors instead of PIL images with ``Normalize``. The class
    order is the one ``SplitFMNIST(n_experiences, seed=seed)`` draws (drawn with a
    private generator, so torch's global RNG is not re-seeded). Task labels are 0.

    Args:
        n_experiences: number of experiences, a divisor of 10 (default 10, one
            class each: 6k train / 1k test images per experience).
        seed: seed of the class order (default 0); ignored when
            ``fixed_class_order`` is given.
        dataset_root: folder holding ``FashionMNIST/raw``; default
            :func:`avalanche_lvae.data.default_dataset_root`.
        fixed_class_order: a permutation of ``0..9`` giving the class order.
        max_train_per_experience: keep only the first N training images (file
            order) of each experience; None keeps all.
        max_test_per_experience: same for the test images.

    Returns:
        An Avalanche ``NCScenario``.
    """
    return _class_incremental("FashionMNIST", n_experiences, seed, dataset_root, fixed_class_order,
                              max_train_per_experience, max_test_per_experience)


def mnist_fashion_permuted(
    seed: int = 0,
    dataset_root: Optional[PathLike] = None,
    max_train_per_experience: Optional[int] = None,
    max_test_per_experience: Optional[int] = None,
):
    """MNIST -> FashionMNIST -> permuted MNIST (CCL-GM Fig. 4), 3 experiences.

    FashionMNIST keeps its labels 0-9, which therefore overlap MNIST's digits
    0-9: the stream has 10 classes in total, matching a 10-output classifier
    (``classes_in_this_experience`` is ``0..9`` in every experience). The
    permutation is ``pixel_permutations(1, seed)[0]``, i.e. the first
    permutation of :func:`permuted_mnist` with the same seed. Task labels are 0.

    Args:
        seed: seed of the pixel permutation (default 0).
        dataset_root: folder holding ``MNIST/raw`` and ``FashionMNIST/raw``;
            default :func:`avalanche_lvae.data.default_dataset_root`.
        max_train_per_experience: keep only the first N training images of each
            experience; None keeps all 60k.
        max_test_per_experience: same for the 10k test images.

    Returns:
        An Avalanche ``ClassificationScenario`` built with ``dataset_benchmark``.
    """
    seed = _check_seed(seed)
    max_train = _check_int(max_train_per_experience, "max_train_per_experience", optional=True)
    max_test = _check_int(max_test_per_experience, "max_test_per_experience", optional=True)
    root_m = require_dataset("MNIST", dataset_root)
    root_f = require_dataset("FashionMNIST", dataset_root)
    perm = pixel_permutations(1, seed)[0]
    streams = []
    for train, n in ((True, max_train), (False, max_test)):
        xm, ym = _head(*load_tensors("MNIST", train, root_m), n)
        xf, yf = _head(*load_tensors("FashionMNIST", train, root_f), n)
        streams.append([(xm, ym), (xf, yf), (_permute(xm, perm), ym)])
    return benchmark_from_tensors(*streams)


# --------------------------------------------------------------------------- access
def experience_tensors(experience_or_dataset, batch_size: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return all ``(x, y)`` of an experience (or Avalanche dataset) as two tensors.

    Handy for whole-test-set evaluations (ELBO, Frechet distance). Goes through
    a ``DataLoader`` (:func:`avalanche_lvae.preloading.read_tensors`) because
    Avalanche datasets expose items, not their backing tensors; a 10k test set
    takes a fraction of a second, a 60k training set 1-2 s (mostly allocating
    the 188 MB result).
    """
    dataset = getattr(experience_or_dataset, "dataset", experience_or_dataset)
    if len(dataset) == 0:
        raise ValueError("experience_tensors: the dataset is empty.")
    x, y = read_tensors(dataset, batch_size)[:2]
    return x, y
