"""Every use of Avalanche's private API in this package, in one module.

Avalanche 0.6 offers no public way to do three things this package needs:

- read the tree of an ``AvalancheDataset`` (``AvalancheDataset._flat_data``,
  ``FlatData._datasets``, ``_FlatDataWithTransform._transform_groups`` /
  ``._frozen_transform_groups``), to prove that its items are plain tensors
  without transforms (:func:`avalanche_lvae.preloading.is_tensor_backed`);
- replace the ``torch`` ``DataLoader`` that ``MultiDatasetDataLoader`` builds
  around its batch sampler each epoch (the ``_make_pytorch_loader`` hook and
  ``data_loader._make_data_loader_with_batched_sampler``), to serve the same
  minibatches from pre-loaded tensors
  (:class:`avalanche_lvae.preloading.PreloadedTaskBalancedDataLoader`);
- build a template's loader arguments the way its own ``make_train_dataloader``
  does (``BaseSGDTemplate._obtain_common_dataloader_parameters``).

Each private name is looked up when it is used, never at import, so an
Avalanche release that drops one breaks only the feature that needs it, and
with an :class:`AvalancheInternalsError` naming the Avalanche version and the
missing symbol instead of an ``AttributeError`` deep in a training loop
(``tests/test_avalanche_internals.py`` checks them all against the installed
Avalanche). Protected members of the templates that a subclass uses as
extension points (``_criterion``, ``_unpack_minibatch``, in
:mod:`avalanche_lvae.training`) are checked by that test too.
"""

from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "SUPPORTED_AVALANCHE",
    "AvalancheInternalsError",
    "avalanche_version",
    "flat_data",
    "flat_data_node",
    "BatchSamplerLoaderHook",
    "loader_from_batch_sampler",
    "common_dataloader_parameters",
]

#: The Avalanche releases whose internals this module matches (as in setup.py).
SUPPORTED_AVALANCHE = "avalanche-lib>=0.6.0,<0.7"

_TREE = "reading an AvalancheDataset's data tree (pre-loading tensor data)"
_LOADER = "serving pre-loaded minibatches (PreloadedTaskBalancedDataLoader)"
_TEMPLATE = "building the training loader (LVAETemplateMixin.make_train_dataloader)"


class AvalancheInternalsError(RuntimeError):
    """The installed Avalanche lacks a private symbol this package relies on."""


def avalanche_version() -> str:
    """The installed ``avalanche-lib`` version, e.g. ``"0.6.0"``."""
    from importlib import metadata

    try:
        return metadata.version("avalanche-lib")
    except metadata.PackageNotFoundError:  # e.g. Avalanche used from a source checkout
        import avalanche

        return getattr(avalanche, "__version__", "unknown")


def _missing(symbol: str, purpose: str) -> AvalancheInternalsError:
    return AvalancheInternalsError(
        f"avalanche-lib {avalanche_version()} has no {symbol}, which avalanche_lvae uses for {purpose}. "
        f"Install a supported release ({SUPPORTED_AVALANCHE}) or adapt avalanche_lvae/avalanche_internals.py."
    )


def _lookup(owner: Any, name: str, symbol: str, purpose: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        raise _missing(symbol, purpose) from None


# --------------------------------------------------------------------------- dataset tree
def flat_data(dataset) -> Optional[Any]:
    """The root of an ``AvalancheDataset``'s data tree (its ``_flat_data``); None for any other dataset."""
    from avalanche.benchmarks.utils import AvalancheDataset

    if not isinstance(dataset, AvalancheDataset):
        return None
    return _lookup(dataset, "_flat_data", "AvalancheDataset._flat_data", _TREE)


def flat_data_node(node) -> Optional[Tuple[List[Any], List[Any]]]:
    """``(children, transform_groups)`` of one node of an Avalanche data tree.

    ``transform_groups`` are the ``TransformGroups`` the node applies (its plain
    and frozen groups; none for a plain ``FlatData``). Returns None for a node
    of any other type -- a leaf dataset, or a node whose layout is not known
    here and whose items may therefore be transformed.
    """
    from avalanche.benchmarks.utils import data as avalanche_data
    from avalanche.benchmarks.utils.flat_data import FlatData

    with_transform = _lookup(avalanche_data, "_FlatDataWithTransform",
                             "avalanche.benchmarks.utils.data._FlatDataWithTransform", _TREE)
    # Exact types: a subclass may transform its items in a way not read here.
    if type(node) is with_transform:
        groups = [_lookup(node, "_transform_groups", "_FlatDataWithTransform._transform_groups", _TREE),
                  _lookup(node, "_frozen_transform_groups", "_FlatDataWithTransform._frozen_transform_groups", _TREE)]
    elif type(node) is FlatData:
        groups = []
    else:
        return None
    return list(_lookup(node, "_datasets", "FlatData._datasets", _TREE)), groups


# --------------------------------------------------------------------------- data loaders
class BatchSamplerLoaderHook:
    """Mixin for a subclass of Avalanche's ``MultiDatasetDataLoader`` (e.g. ``TaskBalancedDataLoader``).

    Each epoch Avalanche creates its samplers (the private ``_create_samplers``),
    draws a batch sampler over its per-task datasets and wraps it in a
    ``torch`` ``DataLoader`` through the private hook ``_make_pytorch_loader``;
    with this mixin first in the bases, the subclass's
    ``make_pytorch_loader(batch_sampler)`` builds that loader instead, and its
    ``samplers_created(samplers)`` sees each epoch's samplers first.
    """

    _HOOKS = ("_make_pytorch_loader", "_create_samplers")

    def __init__(self, *args, **kwargs):
        bases = [cls for cls in type(self).__mro__ if cls is not BatchSamplerLoaderHook]
        for hook in self._HOOKS:
            if not any(hook in vars(cls) for cls in bases):
                raise _missing(f"MultiDatasetDataLoader.{hook}", _LOADER)
        super().__init__(*args, **kwargs)

    def samplers_created(self, samplers) -> None:
        """Called once per epoch with the epoch's batch samplers, before any minibatch is drawn."""

    def _create_samplers(self, *args, **kwargs):
        samplers = super()._create_samplers(*args, **kwargs)
        self.samplers_created(samplers)
        return samplers

    def make_pytorch_loader(self, batch_sampler):
        """Return the iterable of minibatches for one epoch, given Avalanche's batch sampler."""
        raise NotImplementedError(f"{type(self).__name__} must define make_pytorch_loader(batch_sampler).")

    def _make_pytorch_loader(self, datasets, batch_sampler):
        return self.make_pytorch_loader(batch_sampler)


def loader_from_batch_sampler(dataset, batch_sampler, loader_kwargs: Dict[str, Any]):
    """A ``torch`` ``DataLoader`` over ``dataset`` driven by ``batch_sampler``, as Avalanche builds it.

    Avalanche's helper drops the arguments a batch sampler replaces
    (``batch_size``, ``shuffle``, ``sampler``, ``drop_last``) from ``loader_kwargs``.
    """
    from avalanche.benchmarks.utils import data_loader

    make = _lookup(data_loader, "_make_data_loader_with_batched_sampler",
                   "avalanche.benchmarks.utils.data_loader._make_data_loader_with_batched_sampler", _LOADER)
    return make(dataset, batch_sampler, loader_kwargs)


# --------------------------------------------------------------------------- templates
def common_dataloader_parameters(strategy, **kwargs) -> Dict[str, Any]:
    """The loader arguments ``strategy.make_train_dataloader`` would pass (batch size, collate, workers, ...)."""
    method = _lookup(strategy, "_obtain_common_dataloader_parameters",
                     "BaseSGDTemplate._obtain_common_dataloader_parameters", _TEMPLATE)
    return method(**kwargs)
