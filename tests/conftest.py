"""Shared pytest fixtures.

The datasets are never downloaded: ``data_root`` points at the folder holding
``MNIST/raw`` and ``FashionMNIST/raw`` (``$LVAE_DATA_DIR`` or
``../shared/datasets``) and fails with the loader's explanatory
``FileNotFoundError`` when the files are missing, instead of skipping.
"""

import pytest

from avalanche_lvae.data import default_dataset_root, require_dataset


@pytest.fixture(scope="session")
def data_root():
    """The dataset root, checked to hold both MNIST and FashionMNIST."""
    root = default_dataset_root()
    require_dataset("MNIST", root)
    require_dataset("FashionMNIST", root)
    return root
