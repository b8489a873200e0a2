"""The reference classifier whose features the Frechet distance compares (LGM App. 9.10).

The paper scores generated images by the Frechet distance between the
features of a classifier *trained on the data* (not Inception) for generated
and for real test images. :func:`reference_classifier` trains a small CNN
once per benchmark and seed on the training data of the given experiences,
caches its weights and its test accuracy in a file, and reloads that file on
every later call.

By default the classifier learns *(distribution, class)* pairs, target
``experience_index * num_classes + label``, not the class alone. Its features
must tell the distributions apart, or the Frechet distance cannot see a
forgotten one: on permuted MNIST every experience has the same ten labels, and a
class-only reference rated the naive model's samples, all of the last
permutation, better than the lifelong model's samples of all five
(FD 19.9 vs 33.4). Where every experience holds its own classes, as in split
FashionMNIST, the pair is the class.
"""

import os
import re
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..models.activations import ELU
from ..streams import experience_tensors
from ..validation import check_bool, check_positive_int

__all__ = [
    "CACHE_ENV_VAR",
    "ReferenceClassifier",
    "default_cache_dir",
    "reference_classifier",
    "train_reference_classifier",
    "classifier_accuracy",
]

#: Environment variable overriding the cache folder of the reference classifiers.
CACHE_ENV_VAR = "LVAE_CACHE_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ReferenceClassifier(nn.Module):
    """Small CNN classifier; :meth:`features` gives the penultimate layer (``feature_dim`` values).

    conv 3x3 (16) - ReLU - maxpool 2 - conv 3x3 (32) - ReLU - maxpool 2 -
    dense ``feature_dim`` - ELU - dense ``num_classes``; small enough to
    featurise 1000 MNIST images in about 0.6 s on one CPU core. The feature layer uses
    ELU rather than ReLU so that no feature is constant zero on a whole data
    set, which would make the feature covariance of the Frechet distance singular.

    Args:
        input_shape: ``(C, H, W)`` of the images (pixels in [0, 1]).
        num_classes: number of classes of the data it is trained on.
        feature_dim: size of the feature layer (default 128).
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        channels, height, width = (int(s) for s in input_shape)
        if min(channels, height, width) < 1 or min(height, width) < 4:
            raise ValueError(f"input_shape must be (C, H, W) with H, W >= 4, got {tuple(input_shape)!r}.")
        self.input_shape = (channels, height, width)
        self.num_classes = check_positive_int(int(num_classes), "num_classes")
        self.feature_dim = check_positive_int(int(feature_dim), "feature_dim")
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.feature_layer = nn.Sequential(nn.Linear(32 * (height // 4) * (width // 4), feature_dim), ELU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``[N, feature_dim]`` of images ``[N, C, H, W]``."""
        return self.feature_layer(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, num_classes]``."""
        return self.head(self.features(x))


def default_cache_dir() -> Path:
    """``$LVAE_CACHE_DIR`` when set, else ``<repo root>/benchmarks/results/cache``."""
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    return Path(env).expanduser() if env else _REPO_ROOT / "benchmarks" / "results" / "cache"


def _datasets(experiences) -> List:
    items = list(experiences) if not hasattr(experiences, "dataset") else [experiences]
    if not items:
        raise ValueError("reference_classifier needs at least one experience (or dataset) to train on.")
    return [getattr(e, "dataset", e) for e in items]


def _targets(labels: torch.Tensor, experience_index: int, num_classes: int, per_distribution: bool) -> torch.Tensor:
    """The classifier's target: the label, or the (distribution, class) pair ``index * num_classes + label``."""
    labels = labels.long()
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) (num_classes={num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]; pass the stream's number of classes.")
    return labels + experience_index * num_classes if per_distribution else labels


def _load_uint8(datasets, num_classes: int, per_distribution: bool) -> tuple:
    """All images as uint8 (4x less memory than float: 300k MNIST images take 235 MB) and targets."""
    xs, ys = [], []
    for index, dataset in enumerate(datasets):
        x, y = experience_tensors(dataset)
        xs.append(x.mul(255).round_().to(torch.uint8))
        ys.append(_targets(y, index, num_classes, per_distribution))
    return torch.cat(xs), torch.cat(ys)


def train_reference_classifier(
    model: ReferenceClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
) -> ReferenceClassifier:
    """Train ``model`` with Adam and cross-entropy; ``images`` uint8 ``[N, C, H, W]`` (or floats in [0, 1]).

    The minibatch order comes from a private generator seeded with ``seed``,
    so torch's global RNG is not consumed. Returns the model in eval mode.
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            x = images[idx].to(device).float().div_(scale)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, experiences, batch_size: int = 1024, *, per_distribution: bool = False,
                        num_classes: int = 10) -> List[float]:
    """Accuracy of ``model`` on each experience (or dataset) of ``experiences``; the train/eval flag is restored.

    With ``per_distribution`` the target of experience ``i`` is the pair
    ``i * num_classes + label`` (see :func:`reference_classifier`).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    accuracies = []
    try:
        for index, dataset in enumerate(_datasets(experiences)):
            x, y = experience_tensors(dataset)
            y = _targets(y, index, num_classes, per_distribution)
            correct = sum(
                int((model(xb.to(device)).argmax(-1).cpu() == yb).sum())
                for xb, yb in zip(x.split(batch_size), y.split(batch_size))
            )
            accuracies.append(correct / len(y))
    finally:
        model.train(was_training)
    return accuracies


def reference_classifier(
    benchmark_name: str,
    train_experiences: Iterable,
    test_experiences: Optional[Iterable] = None,
    *,
    seed: int = 0,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    num_classes: int = 10,
    feature_dim: int = 128,
    per_distribution: bool = True,
    device: Union[str, torch.device] = "cpu",
    retrain: bool = False,
) -> ReferenceClassifier:
    """Return the reference classifier of a benchmark: trained once, then loaded from its cache file.

    The file is ``<cache_dir>/reference_<benchmark_name>_seed<seed>.pt``; it
    holds the ``state_dict``, the architecture, the number of training images
    per experience, the training settings, the training time and, when
    ``test_experiences`` are given, the test accuracy (per experience and
    pooled). The same information is on the returned model as ``.metadata``.

    Args:
        benchmark_name: names the data, e.g. ``"permuted_mnist5"``; letters,
            digits and ``_.-`` only. Two different data sets must not share a name.
        train_experiences: the experiences (a stream, a list, or datasets)
            whose *training* data the classifier learns, all merged (as the
            authors' classifier trained on all tasks).
        test_experiences: optional; their accuracy is measured after training
            and stored.
        seed: seeds the initial weights and the minibatch order.
        cache_dir: default :func:`default_cache_dir` (``$LVAE_CACHE_DIR`` or
            ``benchmarks/results/cache`` under the repository root).
        epochs, batch_size, lr: Adam training settings (used only when training).
        num_classes: number of class labels of the stream.
        feature_dim: size of the feature layer (:class:`ReferenceClassifier`).
        per_distribution: learn (distribution, class) pairs, ``len(experiences)
            * num_classes`` outputs (default), so that the features separate
            distributions which share labels; False learns the labels only.
        device: where to train and where the returned model lives.
        retrain: train again and overwrite the cache file.

    Raises:
        ValueError: bad name, or the cache file was trained on data of another
            size or with another architecture (pass ``retrain=True`` or another name).
    """
    if not isinstance(benchmark_name, str) or not _NAME.match(benchmark_name):
        raise ValueError(f"benchmark_name must be a non-empty string of letters, digits and _.-, "
                         f"got {benchmark_name!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    check_positive_int(num_classes, "num_classes")
    per_distribution = check_bool(per_distribution, "per_distribution")
    datasets = _datasets(train_experiences)
    input_shape = tuple(int(s) for s in datasets[0][0][0].shape)
    n_outputs = num_classes * len(datasets) if per_distribution else num_classes
    architecture = dict(input_shape=list(input_shape), num_classes=n_outputs, feature_dim=feature_dim,
                        per_distribution=per_distribution)
    n_train = [len(d) for d in datasets]
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / f"reference_{benchmark_name}_seed{seed}.pt"

    if path.is_file() and not retrain:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = payload["metadata"]
        if meta["architecture"] != architecture or meta["n_train"] != n_train:
            raise ValueError(
                f"the cached reference classifier {path} was trained on {meta['n_train']} images per experience "
                f"with {meta['architecture']}, but this call gives {n_train} with {architecture}; the name "
                f"{benchmark_name!r} must identify one data set. Pass another benchmark_name, or retrain=True "
                "to overwrite the file."
            )
        model = ReferenceClassifier(input_shape, n_outputs, feature_dim)
        model.load_state_dict(payload["state_dict"])
    else:
        images, labels = _load_uint8(datasets, num_classes, per_distribution)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
            torch.manual_seed(seed)
            model = ReferenceClassifier(input_shape, n_outputs, feature_dim)
        start = time.perf_counter()
        train_reference_classifier(model, images, labels, epochs=epochs, batch_size=batch_size, lr=lr,
                                   seed=seed, device=device)
        meta = dict(benchmark_name=benchmark_name, seed=seed, architecture=architecture, n_train=n_train,
                    epochs=epochs, batch_size=batch_size, lr=lr, train_seconds=time.perf_counter() - start,
                    test_accuracy=None, test_accuracy_per_experience=None)
        if test_experiences is not None:
            per_exp = classifier_accuracy(model, test_experiences, per_distribution=per_distribution,
                                          num_classes=num_classes)
            sizes = [len(d) for d in _datasets(test_experiences)]
            meta["test_accuracy_per_experience"] = per_exp
            meta["test_accuracy"] = sum(a * n for a, n in zip(per_exp, sizes)) / sum(sizes)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "metadata": meta}, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    model.to(device).eval().requires_grad_(False)
    model.metadata = dict(meta, cache_path=str(path))
    return model
