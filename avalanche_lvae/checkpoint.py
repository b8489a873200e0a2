"""Make strategies holding a ``torch.optim`` optimizer picklable by Avalanche's checkpointing.

Avalanche's ``save_checkpoint`` / ``maybe_load_checkpoint``
(``avalanche.checkpointing``) pickle the whole strategy with ``dill``. With
recent PyTorch, ``torch.optim`` no longer exposes its submodules as
attributes (``torch.optim.adam`` is not an attribute of ``torch.optim``), so
dill cannot find ``torch.optim.adam.Adam`` by reference, falls back to
pickling the class *by value*, and fails deep inside
``Optimizer.__dict__`` (``PicklingError: Can't pickle sentinel``). Every
Avalanche strategy with an Adam or SGD optimizer is affected, not only ours.

:func:`register_optimizer_pickling` (run when :mod:`avalanche_lvae` is
imported) registers a dill reducer for each optimizer class of
``torch.optim``: the instance is pickled as (module, class name, the
optimizer's own ``__getstate__``), i.e. exactly what plain ``pickle`` stores,
and rebuilt by :func:`_rebuild_optimizer`. The parameters inside
``param_groups`` are the model's ``Parameter`` objects, so the pickle memo
keeps them shared with the model after loading. Optimizer hooks are not
saved (plain pickling drops them too).
"""

import importlib
import inspect

import dill
import torch

__all__ = ["register_optimizer_pickling"]


def _rebuild_optimizer(module: str, qualname: str, state: dict) -> torch.optim.Optimizer:
    """Unpickle an optimizer: look its class up by name and restore its state."""
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    optimizer = cls.__new__(cls)
    optimizer.__setstate__(state)
    return optimizer


def _save_optimizer(pickler, obj: torch.optim.Optimizer) -> None:
    cls = type(obj)
    pickler.save_reduce(_rebuild_optimizer, (cls.__module__, cls.__qualname__, obj.__getstate__()), obj=obj)


def register_optimizer_pickling() -> None:
    """Register :func:`_save_optimizer` with dill for every optimizer class exported by ``torch.optim``.

    Idempotent. Optimizer classes defined elsewhere (in an importable module)
    already pickle by reference and need nothing.
    """
    for cls in vars(torch.optim).values():
        if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer):
            dill.register(cls)(_save_optimizer)


register_optimizer_pickling()
