"""Locating and loading the MNIST / FashionMNIST files, never downloading them.

The datasets are expected in the torchvision layout::

    <root>/MNIST/raw/train-images-idx3-ubyte          (or ...-ubyte.gz)
    <root>/MNIST/raw/train-labels-idx1-ubyte
    <root>/MNIST/raw/t10k-images-idx3-ubyte
    <root>/MNIST/raw/t10k-labels-idx1-ubyte
    <root>/FashionMNIST/raw/... (same four names)

Nothing here downloads: the project runs on machines without internet access
and the files are shared between checkouts, so a missing file is reported
with a message that says where it was looked for and how to point the code
at the right folder (``LVAE_DATA_DIR`` or ``dataset_root=``).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

__all__ = [
    "DATASET_NAMES",
    "ENV_VAR",
    "RAW_FILES",
    "default_dataset_root",
    "require_dataset",
    "load_tensors",
]

#: Environment variable that overrides every other dataset location.
ENV_VAR = "LVAE_DATA_DIR"

#: Dataset names understood by :func:`require_dataset` and :func:`load_tensors`
#: (the torchvision class names, hence the folder names).
DATASET_NAMES = ("MNIST", "FashionMNIST")

#: The four files torchvision expects in ``<root>/<name>/raw/``.
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

PathLike = Union[str, "os.PathLike[str]"]

# The repository root is the parent of the package folder; in this project the
# shared datasets live next to the checkout, in ``<repo root>/../shared/datasets``.
_REPO_ROOT = Path(__file__).resolve().parent.parent
_SHARED_DATASETS = (_REPO_ROOT / ".." / "shared" / "datasets").resolve()


def default_dataset_root() -> Path:
    """Return the folder that should hold ``MNIST/raw`` and ``FashionMNIST/raw``.

    Resolution order:

    1. ``$LVAE_DATA_DIR`` when set and non-empty (returned even if it does not
       exist, so that :func:`require_dataset` can report the folder the user
       asked for instead of silently falling back);
    2. ``<repo root>/../shared/datasets`` when that folder exists;
    3. Avalanche's default dataset location (``~/.avalanche/data`` unless
       changed in ``~/.avalanche/config.json``).
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    if _SHARED_DATASETS.is_dir():
        return _SHARED_DATASETS
    # Imported lazily: importing Avalanche takes seconds and writes its config
    # file, which callers that set LVAE_DATA_DIR should not pay for.
    from avalanche.benchmarks.datasets.dataset_utils import default_dataset_location

    return Path(default_dataset_location("")).expanduser()


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(
            f"Unknown dataset name {name!r}; use one of {', '.join(DATASET_NAMES)} "
            "(the torchvision folder names, case-sensitive)."
        )


def _resolve_root(root: Optional[PathLike]) -> Path:
    return default_dataset_root() if root is None else Path(root).expanduser()


def require_dataset(name: str, root: Optional[PathLike] = None) -> Path:
    """Check that ``<root>/<name>/raw`` holds the four MNIST-format files.

    Each file may be present uncompressed or as ``<file>.gz``.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        root: folder holding ``<name>/raw``; ``None`` means
            :func:`default_dataset_root`.

    Returns:
        The dataset root (the folder that holds ``<name>/raw``), as a ``Path``;
        pass it on to torchvision or to :func:`load_tensors`.

    Raises:
        ValueError: ``name`` is not one of :data:`DATASET_NAMES`.
        FileNotFoundError: a file is missing; the message names the folder,
            the missing files, and how to point the code at the data.
    """
    _check_name(name)
    root_path = _resolve_root(root)
    raw = root_path / name / "raw"
    missing = [f for f in RAW_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name} files not found: expected {', '.join(missing)} (or the same names "
            f"with .gz) in {raw}. Datasets are never downloaded. Set the environment "
            f"variable {ENV_VAR} (or pass dataset_root=) to a folder that holds "
            "MNIST/raw and FashionMNIST/raw in the torchvision layout."
        )
    return root_path


def _read_idx(path: Path) -> torch.Tensor:
    """Parse an (optionally gzipped) IDX file of unsigned bytes.

    Only needed when the raw folder holds ``.gz`` files alone, which
    torchvision will not read with ``download=False``.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dtype_code, ndim = magic // 256, magic % 256
    if dtype_code != 0x08:  # 0x08 = unsigned byte, the only type MNIST uses
        raise ValueError(f"{path}: unsupported IDX data type 0x{dtype_code:02x}; expected 0x08 (uint8).")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 * (ndim + 1)
    # bytearray gives torch.frombuffer a writable buffer (no warning, no copy later).
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=offset).view(*dims).clone()


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, train: bool, root: str) -> Tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets as tvd

    raw = Path(root) / name / "raw"
    prefix = "train" if train else "t10k"
    img_file = raw / f"{prefix}-images-idx3-ubyte"
    lbl_file = raw / f"{prefix}-labels-idx1-ubyte"
    if img_file.is_file() and lbl_file.is_file():
        # torchvision parses the files (and checks them); download=False makes a
        # missing or corrupt file an error instead of a network access.
        ds = getattr(tvd, name)(root, train=train, download=False)
        images, labels = ds.data, ds.targets
    else:
        # Only the .gz files exist (require_dataset accepted them).
        images = _read_idx(img_file.with_name(img_file.name + ".gz"))
        labels = _read_idx(lbl_file.with_name(lbl_file.name + ".gz"))
    # Bulk conversion of the whole uint8 array: no per-sample PIL round trip,
    # and pixels land in [0, 1] as a Bernoulli decoder needs (no Normalize).
    x = images.unsqueeze(1).to(torch.float32).div_(255.0).contiguous()
    y = labels.to(torch.int64).contiguous()
    return x, y


def load_tensors(
    name: str, train: bool, root: Optional[PathLike] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load a whole MNIST-format split as tensors.

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        train: ``True`` for the 60k training split, ``False`` for the 10k test split.
        root: folder holding ``<name>/raw``; ``None`` means :func:`default_dataset_root`.

    Returns:
        ``(images, labels)``: ``float32`` images of shape ``[N, 1, 28, 28]`` with
        values in ``[0, 1]``, and ``int64`` labels of shape ``[N]``.

    The result is cached per process (streams reuse the same split several
    times), so the returned tensors are shared: treat them as read-only and
    clone before modifying them in place.

    Raises:
        ValueError / FileNotFoundError: as :func:`require_dataset`.
    """
    root_path = require_dataset(name, root)
    # Resolve before caching so that root=None and the equivalent explicit
    # path share one cache entry.
    return _load_cached(name, bool(train), str(root_path.resolve()))
