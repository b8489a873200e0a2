"""Shared pytest fixtures.

``data_root`` is found the way the package finds its data
(:func:`avalanche_lvae.data.require_dataset`: ``$LVAE_DATA_DIR``, a
``shared/datasets`` folder beside the checkout, Avalanche's dataset location,
downloading there when no copy exists); a machine without a copy and without
internet fails with the loader's one-line ``DatasetNotFoundError`` instead of
skipping.
"""

import pytest

from avalanche_lvae.data import require_dataset


@pytest.fixture(scope="session")
def data_root():
    """The folder MNIST is read from; FashionMNIST is checked to be available too."""
    require_dataset("FashionMNIST")
    return require_dataset("MNIST")
