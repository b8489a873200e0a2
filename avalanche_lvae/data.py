"""Finding, downloading and loading MNIST / FashionMNIST through torchvision.

The files are read by ``torchvision.datasets.MNIST`` / ``FashionMNIST`` from
the torchvision layout::

    <root>/MNIST/raw/train-images-idx3-ubyte
    <root>/MNIST/raw/train-labels-idx1-ubyte
    <root>/MNIST/raw/t10k-images-idx3-ubyte
    <root>/MNIST/raw/t10k-labels-idx1-ubyte
    <root>/FashionMNIST/raw/... (same four names)

A dataset is looked for, in this order, in (see :func:`dataset_roots`):

1. the ``dataset_root=`` argument, when given (a folder that does not exist is an error);
2. ``$LVAE_DATA_DIR``, when set (likewise);
3. ``shared/datasets`` beside the repository checkout, when that folder exists;
4. Avalanche's default location for the dataset
   (``default_dataset_location("mnist")`` / ``("fashionmnist")``, i.e.
   ``~/.avalanche/data/mnist`` unless changed in ``~/.avalanche/config.json``),
   the folder Avalanche's own ``SplitMNIST`` / ``SplitFMNIST`` download to.

The first folder that holds the four files is used, without any network
access. When none does, torchvision downloads the dataset into the last one,
as every Avalanche benchmark does; if that fails too (e.g. a machine without
internet), :class:`DatasetNotFoundError` says, in one line, which folders were
searched and that ``LVAE_DATA_DIR`` (or ``dataset_root=``) can point at a copy.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import torch

__all__ = [
    "DATASET_NAMES",
    "ENV_VAR",
    "RAW_FILES",
    "DatasetNotFoundError",
    "dataset_roots",
    "default_dataset_root",
    "require_dataset",
    "load_tensors",
]

#: Environment variable naming a folder that holds ``MNIST/raw`` / ``FashionMNIST/raw``.
ENV_VAR = "LVAE_DATA_DIR"

#: Dataset names understood here (the torchvision class names, hence the folder names),
#: with the folder name Avalanche's benchmarks give each under its dataset location.
_AVALANCHE_NAMES = {"MNIST": "mnist", "FashionMNIST": "fashionmnist"}
DATASET_NAMES = tuple(_AVALANCHE_NAMES)

#: The four files torchvision reads from ``<root>/<name>/raw/``.
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

PathLike = Union[str, "os.PathLike[str]"]

# The parent folder of a checkout may hold ``shared/datasets``: one copy read by
# several checkouts of the repository.
_REPO_ROOT = Path(__file__).resolve().parent.parent
_SHARED_DATASETS = (_REPO_ROOT / ".." / "shared" / "datasets").resolve()


class DatasetNotFoundError(FileNotFoundError, RuntimeError):
    """No local copy of a dataset was found and downloading it failed.

    A ``FileNotFoundError`` (the files are missing) and a ``RuntimeError``
    (what torchvision raises for a dataset it cannot find or download).
    """


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(
            f"Unknown dataset name {name!r}; use one of {', '.join(DATASET_NAMES)} "
            "(the torchvision folder names, case-sensitive)."
        )


def _avalanche_location(name: str) -> Path:
    # Imported lazily: importing Avalanche takes seconds, which a caller that
    # finds its data in an earlier folder should not pay for.
    from avalanche.benchmarks.datasets.dataset_utils import default_dataset_location

    return Path(default_dataset_location(_AVALANCHE_NAMES[name])).expanduser()


def _given_folder(value: Optional[PathLike], what: str, name: str) -> Optional[Path]:
    """The folder named by ``dataset_root=`` or ``$LVAE_DATA_DIR``; one that does not exist is a mistake."""
    if value is None or not str(value).strip():
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        later = ("" if what == ENV_VAR else f"{ENV_VAR}, ") + "shared/datasets beside the checkout"
        raise DatasetNotFoundError(
            f"{what}={folder} is not a folder. Point it at a folder holding {name}/raw "
            f"({', '.join(RAW_FILES)}), or leave it unset to use {later} or Avalanche's dataset "
            "location (downloading there)."
        )
    return folder


def _candidate_roots(name: str, root: Optional[PathLike]) -> Iterator[Path]:
    """Yield the folders of :func:`dataset_roots`, Avalanche's location last and only when reached."""
    _check_name(name)
    seen = []
    for folder in (_given_folder(root, "dataset_root", name),
                   _given_folder(os.environ.get(ENV_VAR), ENV_VAR, name),
                   _SHARED_DATASETS if _SHARED_DATASETS.is_dir() else None):
        if folder is not None and folder not in seen:
            seen.append(folder)
            yield folder
    last = _avalanche_location(name)
    if last not in seen:
        yield last


def dataset_roots(name: str, root: Optional[PathLike] = None) -> List[Path]:
    """The folders searched for ``<folder>/<name>/raw``, in order, without duplicates.

    ``root`` (when given), ``$LVAE_DATA_DIR`` (when set), ``shared/datasets``
    beside the checkout (when it exists), and Avalanche's default location for
    ``name``, which is always last: the dataset is downloaded there when no
    folder holds it.

    Raises:
        DatasetNotFoundError: ``root`` or ``$LVAE_DATA_DIR`` names a folder that
            does not exist (a mistyped path is reported, not skipped).
    """
    return list(_candidate_roots(name, root))


def _has_copy(folder: Path, name: str) -> bool:
    raw = folder / name / "raw"
    return all((raw / f).is_file() for f in RAW_FILES)


def default_dataset_root(name: str = "MNIST") -> Path:
    """The folder ``name`` is read from when no ``dataset_root`` is given.

    The first folder of :func:`dataset_roots` that holds the four files, else
    Avalanche's default location (where :func:`require_dataset` downloads it).
    Never accesses the network.
    """
    folder = None
    for folder in _candidate_roots(name, None):
        if _has_copy(folder, name):
            break
    return folder


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def require_dataset(name: str, root: Optional[PathLike] = None) -> Path:
    """Return a folder holding ``<name>/raw``, downloading the dataset if no folder does.

    The folders of :func:`dataset_roots` are searched in order; the first that
    holds the four files of :data:`RAW_FILES` is returned without any network
    access. Otherwise torchvision downloads the dataset into Avalanche's
    default location for it, which is returned.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        root: a folder to search first (the ``dataset_root=`` of the streams).

    Returns:
        The dataset root (the folder that holds ``<name>/raw``), as a ``Path``;
        pass it on to torchvision or to :func:`load_tensors`.

    Raises:
        ValueError: ``name`` is not one of :data:`DATASET_NAMES`.
        DatasetNotFoundError: no folder holds the files and the download failed
            (the one-line message names every folder searched and ``LVAE_DATA_DIR``),
            or ``root`` / ``$LVAE_DATA_DIR`` is not a folder.
    """
    roots = []
    for folder in _candidate_roots(name, root):  # Avalanche is imported only if no earlier folder has a copy
        if _has_copy(folder, name):
            return folder
        roots.append(folder)
    target = roots[-1]
    import torchvision.datasets as tvd

    try:
        # download=True fetches all four files (train and test) into target/<name>/raw.
        getattr(tvd, name)(str(target), train=True, download=True)
    except Exception as error:  # network, disk or checksum failure: all reported the same way
        tried = ", ".join(str(folder / name / "raw") for folder in roots)
        raise DatasetNotFoundError(
            f"{name} not found (searched {tried}) and downloading it to {target / name / 'raw'} failed "
            f"({type(error).__name__}: {_one_line(error)}). Set the environment variable {ENV_VAR} "
            f"(or pass dataset_root=) to a folder holding {name}/raw with {', '.join(RAW_FILES)}."
        ) from None
    return target


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, train: bool, root: str) -> Tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets as tvd

    # download=False: require_dataset has already found or fetched the files.
    split = getattr(tvd, name)(root, train=train, download=False)
    # Bulk conversion of the whole uint8 array: no per-sample PIL round trip,
    # and pixels land in [0, 1] as a Bernoulli decoder needs (no Normalize).
    x = split.data.unsqueeze(1).to(torch.float32).div_(255.0).contiguous()
    y = split.targets.to(torch.int64).contiguous()
    return x, y


def load_tensors(
    name: str, train: bool, root: Optional[PathLike] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load a whole MNIST-format split as tensors.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        train: ``True`` for the 60k training split, ``False`` for the 10k test split.
        root: a folder to search first; see :func:`require_dataset`.

    Returns:
        ``(images, labels)``: ``float32`` images of shape ``[N, 1, 28, 28]`` with
        values in ``[0, 1]``, and ``int64`` labels of shape ``[N]``.

    The result is cached per process (streams reuse the same split several
    times), so the returned tensors are shared: treat them as read-only and
    clone before modifying them in place.

    Raises:
        ValueError / DatasetNotFoundError: as :func:`require_dataset`.
    """
    root_path = require_dataset(name, root)
    # Resolve before caching so that root=None and the equivalent explicit
    # path share one cache entry.
    return _load_cached(name, bool(train), str(root_path.resolve()))
