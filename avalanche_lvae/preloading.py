"""Pre-loading tensor-backed experiences: Avalanche's minibatches, fetched by tensor indexing.

Avalanche's training loader fetches every sample through the dataset tree
(``AvalancheDataset.__getitem__`` -> flat data -> transforms -> task label)
and collates the minibatch from 256 separate items. For a stream whose data
are in-memory tensors without transforms (every stream of
:mod:`avalanche_lvae.streams`) that Python overhead is a large share of an
epoch of the dense LifelongVAE (``benchmarks/speed.py`` measures it).

:class:`PreloadedTaskBalancedDataLoader` is Avalanche's own
``TaskBalancedDataLoader`` -- same samplers, same ``torch.utils.data.DataLoader``,
hence the same minibatches in the same order and the same draws from the
global RNG -- except that its dataset is the experience's data read once into
tensors, and a minibatch is one indexing operation. (Reading the data is
one ``DataLoader`` pass, hence one more draw at construction: the LVAE
templates validate the data on that pass, and make the same single pass to
validate them under Avalanche's loader, so a seeded run trains bit-identically
with either loader.) Under ``torchrun`` its
samplers shard every epoch by rank exactly as Avalanche's do
(``DistributedSampler``), with a fresh shuffle each epoch, identical on every
rank (see ``shuffle_seed``).

On a GPU the loader holds the experience on the device when it fits
(:func:`placement`: at most ``DEVICE_MEMORY_FRACTION`` of the device's free
memory), so a minibatch is indexed on the device and the training step copies
no images from the host (only the sampler's b indices travel); otherwise, and
always on CPU, the tensors stay in host memory. The minibatches and the run
are the same either way. It is used only when
:func:`is_tensor_backed` proves that every item is a fixed function of its
index (``TensorDataset`` leaves, no transform in the active group); any
dataset with transforms, e.g. random augmentation, keeps Avalanche's loader.
"""

from collections import defaultdict
from typing import List, Optional, Sequence

import torch
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from avalanche.benchmarks.utils.transforms import TupleTransform
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

# Avalanche's private names are looked up there, on use (the module imports nothing at load time).
from . import avalanche_internals

__all__ = ["is_tensor_backed", "read_tensors", "device_budget", "placement", "PreloadedTaskBalancedDataLoader"]

_READ_BATCH = 4096

#: Share of a GPU's free memory the pre-loaded experience may take; the rest is
#: left for the model, its optimizer state, the activations and the teacher's replay.
DEVICE_MEMORY_FRACTION = 0.5


def _group_is_empty(groups, group_name: str) -> bool:
    """True when a ``TransformGroups`` applies nothing for ``group_name``."""
    if groups is None:
        return True
    table = groups.transform_groups
    if group_name in table:
        transform = table[group_name]
    elif isinstance(table, defaultdict) and table.default_factory is not None:
        transform = table.default_factory()  # DefaultTransformGroups: one transform for every group
    else:
        transform = None
    if transform is None:
        return True
    return isinstance(transform, TupleTransform) and all(t is None for t in transform.transforms)


def _flat_is_tensor_backed(node, group_name: str) -> bool:
    if isinstance(node, TensorDataset):
        return True
    layout = avalanche_internals.flat_data_node(node)
    if layout is None:  # a leaf of another kind (torchvision dataset, custom): may transform
        return False
    children, groups = layout
    return all(_group_is_empty(g, group_name) for g in groups) and all(
        _flat_is_tensor_backed(child, group_name) for child in children
    )


def is_tensor_backed(dataset) -> bool:
    """True when every item of an Avalanche dataset is a fixed function of its index.

    That is: all leaves are ``torch.utils.data.TensorDataset`` and no transform
    (plain or frozen) of the dataset's active group is set anywhere in its tree.
    Then reading the items once gives exactly what every epoch would read.
    Any dataset that is not an ``AvalancheDataset`` gives False.
    """
    root = avalanche_internals.flat_data(dataset)
    layout = None if root is None else avalanche_internals.flat_data_node(root)
    if layout is None or not layout[1]:  # the active group is set on the root's transform groups
        return False
    return _flat_is_tensor_backed(root, layout[1][0].current_group)


def read_tensors(dataset, batch_size: int = _READ_BATCH) -> List[torch.Tensor]:
    """All items of a dataset, in index order, as one tensor per item field (x, y, task label)."""
    parts = [batch for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False)]
    return [torch.cat(field) for field in zip(*parts)]


def device_budget(device) -> Optional[int]:
    """Bytes of pre-loaded data ``device`` may hold: ``DEVICE_MEMORY_FRACTION`` of its free memory now.

    None for a device that computes on host memory (CPU): there is nothing to move.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(DEVICE_MEMORY_FRACTION * free)


def placement(tensors: Sequence[torch.Tensor], device) -> Optional[torch.device]:
    """Where to hold an experience's tensors: ``device`` if their bytes fit :func:`device_budget`, else None (host)."""
    budget = device_budget(device)
    size = sum(t.numel() * t.element_size() for t in tensors)
    return torch.device(device) if budget is not None and size <= budget else None


class _IndexedTensors(TensorDataset):
    """torch's ``TensorDataset``, plus ``__getitems__``: a whole minibatch by one indexing operation."""

    def __getitems__(self, indices):
        # torch's fetcher passes the sampler's index list here (instead of one
        # __getitem__ per index) and hands the result to collate_fn; a list of
        # fields, as Avalanche's collate returns.
        return list(self[torch.as_tensor(indices, device=self.tensors[0].device)])


def _already_collated(batch):
    return batch


class PreloadedTaskBalancedDataLoader(avalanche_internals.BatchSamplerLoaderHook, TaskBalancedDataLoader):
    """Avalanche's ``TaskBalancedDataLoader`` over data read once into tensors.

    Takes the same arguments. The per-task datasets Avalanche builds are read
    once (one ``DataLoader`` pass each) and concatenated in the order of the
    ``ConcatDataset`` Avalanche would index, so the batch sampler's indices
    address the same items. Only valid for :func:`is_tensor_backed` data.

    Args:
        shuffle_seed: seed of the ``DistributedSampler`` shuffles when
            distributed (epoch ``e`` uses ``set_epoch(e)``, as
            ``DistributedSampler`` prescribes); pass the same value on every
            rank (the LVAE templates draw it from the shared random stream).
            Avalanche's own loader rebuilds its samplers at epoch 0 with seed 0
            every epoch, i.e. the same order every epoch and experience.
            Unused in a single process.
        device: the device the strategy trains on (None: keep host tensors).
            The tensors move there once when :func:`placement` says they fit
            and the loader has no worker processes (``num_workers=0``, which
            cannot share device tensors); nothing moves on CPU.

    Attributes:
        tensors: the experience's items, one tensor per field ``[x, y, task label]``.
        device: the device holding ``tensors`` when they were moved there, else None (host memory).
    """

    def __init__(self, data, shuffle_seed: int = 0, device=None, **kwargs):
        if not is_tensor_backed(data):
            raise ValueError(
                "PreloadedTaskBalancedDataLoader needs tensor-backed data without transforms "
                "(see is_tensor_backed); use avalanche's TaskBalancedDataLoader for this dataset."
            )
        self.shuffle_seed, self._epoch = int(shuffle_seed), 0
        super().__init__(data, **kwargs)
        per_task = [read_tensors(task_data) for task_data in self.datasets]
        self.tensors = [torch.cat(field) for field in zip(*per_task)]
        self.device = None
        if device is not None and self.loader_kwargs.get("num_workers", 0) == 0:
            self.device = placement(self.tensors, device)
        if self.device is not None:
            self.tensors = [t.to(self.device) for t in self.tensors]

    def make_pytorch_loader(self, batch_sampler):
        """The epoch's loader: Avalanche's batch sampler over the pre-loaded tensors."""
        args = dict(self.loader_kwargs, collate_fn=_already_collated)
        if self.device is not None:
            args["pin_memory"] = False  # device tensors cannot be pinned (torch raises)
        return avalanche_internals.loader_from_batch_sampler(_IndexedTensors(*self.tensors), batch_sampler, args)

    def samplers_created(self, samplers) -> None:
        # Called once per epoch (per iteration over the loader): a fresh shuffle each epoch, the same on every rank.
        for batch_sampler in samplers:
            sampler = getattr(batch_sampler, "sampler", None)
            if isinstance(sampler, DistributedSampler):
                sampler.seed = self.shuffle_seed
                sampler.set_epoch(self._epoch)
        self._epoch += 1
