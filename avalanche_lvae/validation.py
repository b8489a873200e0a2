"""Input checks shared by the model, the losses and the strategy.

Every check raises ``ValueError`` with a message that names the problem *and*
the fix: a silent wrong result (e.g. a Bernoulli likelihood evaluated on
normalised pixels) or a NaN loss several epochs later is far more expensive
for a lifelong run than an immediate, readable error.
"""

import contextlib
import contextvars
from numbers import Real
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.distributions import Distribution

__all__ = [
    "check_images",
    "check_labels",
    "check_positive_int",
    "check_positive_float",
    "check_non_negative_float",
    "check_bool",
    "check_finite",
    "checks_deferred",
    "deferred_checks",
    "FiniteMonitor",
]

_PIXEL_TOLERANCE = 1e-6


def check_images(x: torch.Tensor, input_shape: Sequence[int], where: str = "input") -> None:
    """Check a batch of images for shape, dtype, finiteness and [0, 1] range.

    Args:
        x: tensor of shape ``[N, *input_shape]``.
        input_shape: the ``(C, H, W)`` the model was built for.
        where: a short name of the caller, used in the message.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor of images, got {type(x).__name__}.")
    expected = tuple(input_shape)
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{where}: wrong image shape {tuple(x.shape)}; expected [batch, {', '.join(map(str, expected))}]. "
            f"Build the model with input_shape={tuple(x.shape[1:]) if x.dim() > 1 else '...'} "
            f"or reshape the data to {expected}."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{where}: empty batch (0 images); the experience or minibatch has no samples.")
    if not torch.is_floating_point(x):
        raise ValueError(
            f"{where}: images have dtype {x.dtype}; expected floating point pixels in [0, 1]. "
            "Convert with transforms.ToTensor() or `x.float() / 255`."
        )
    if checks_deferred():
        # Inside the training step: the experience's images were checked once
        # before its first update (LVAETemplateMixin.make_train_dataloader),
        # and replay is the sigmoid of the teacher's logits, so the value
        # checks below -- each a device-to-host sync -- are not repeated per minibatch.
        return
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: images contain NaN or infinite values; clean the data before training.")
    lo, hi = x.min().item(), x.max().item()
    if lo < -_PIXEL_TOLERANCE or hi > 1 + _PIXEL_TOLERANCE:
        hint = (
            "pixels look like raw bytes in [0, 255]: divide by 255 or use transforms.ToTensor()"
            if hi > 1.5 and lo >= 0
            else "pixels look normalised (Avalanche's default MNIST/FashionMNIST transforms apply "
            "Normalize, giving about [-0.42, 2.82]); build the stream with a ToTensor()-only transform, "
            "e.g. avalanche_lvae.streams"
        )
        raise ValueError(
            f"{where}: pixel values in [{lo:.3f}, {hi:.3f}] but the Bernoulli decoder needs [0, 1]; {hint}."
        )


def check_labels(y: torch.Tensor, num_classes: int, where: str = "labels") -> None:
    """Check integer class labels lie in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor of class labels, got {type(y).__name__}.")
    if torch.is_floating_point(y) or y.dim() != 1:
        raise ValueError(
            f"{where}: expected a 1-D integer tensor of class indices, got dtype {y.dtype} "
            f"and shape {tuple(y.shape)}; pass hard labels as torch.long."
        )
    if checks_deferred():  # value range checked once per experience, as for check_images
        return
    if y.numel() and (y.min().item() < 0 or y.max().item() >= num_classes):
        raise ValueError(
            f"{where}: labels in [{y.min().item()}, {y.max().item()}] but the model has num_classes={num_classes} "
            f"(labels must lie in [0, {num_classes})); build LifelongVAE(num_classes=...) large enough "
            "for every class in the stream."
        )


def check_positive_int(value, name: str) -> int:
    """Return ``value`` if it is an int > 0, else raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_positive_float(value, name: str) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_non_negative_float(value, name: str) -> float:
    """Return ``float(value)`` if it is a finite number >= 0 (0 switches a term off)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0 (0 switches the term off), got {value!r}.")
    return float(value)


def check_bool(value, name: str) -> bool:
    """Return ``value`` if it is a bool (or numpy bool), else raise ``ValueError``.

    ``bool("no")`` is True: a flag passed as a string must not silently mean "on".
    """
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


# ------------------------------------------------------------- hot-path checks
class FiniteMonitor:
    """Records, on the device, the first iteration at which each named tensor went non-finite.

    :meth:`record` only launches device operations (no device-to-host
    transfer); :meth:`tripped` reads every record back in one transfer. The
    training step records into it and reads it every few iterations, so a
    NaN is still named with its term and iteration without stopping the
    device every minibatch.

    Attributes:
        iteration: the index written for values recorded now (set by the caller).
    """

    def __init__(self):
        self.iteration = 0
        self._first_bad: Dict[str, torch.Tensor] = {}

    def record(self, name: str, value: torch.Tensor) -> None:
        """Remember ``self.iteration`` for ``name`` if ``value`` has a NaN/inf and ``name`` had none before."""
        bad = ~torch.isfinite(value.detach()).all()
        first = self._first_bad.get(name)
        if first is None or first.device != bad.device:
            first = self._first_bad[name] = torch.full((), -1, dtype=torch.long, device=bad.device)
        first.masked_fill_(bad & (first < 0), self.iteration)

    def tripped(self) -> List[Tuple[str, int]]:
        """``(name, first iteration)`` of every recorded tensor that went non-finite, earliest first (one sync)."""
        if not self._first_bad:
            return []
        names = list(self._first_bad)
        device = self._first_bad[names[0]].device
        firsts = torch.stack([self._first_bad[name].to(device) for name in names]).tolist()
        return sorted(((name, it) for name, it in zip(names, firsts) if it >= 0), key=lambda item: item[1])

    def reset(self) -> None:
        """Forget every record."""
        self._first_bad.clear()


_MONITOR: contextvars.ContextVar = contextvars.ContextVar("avalanche_lvae_finite_monitor", default=None)


@contextlib.contextmanager
def deferred_checks(monitor: Optional[FiniteMonitor]):
    """Run a block with its per-tensor value checks deferred to ``monitor`` (None: immediate checks).

    With a monitor, :func:`check_finite` records into it instead of reading
    the value back, :func:`check_images` and :func:`check_labels` keep their
    shape and dtype checks but skip the value checks (the data were checked
    once per experience), and ``torch.distributions`` argument validation,
    which reads every constructed distribution's parameters back to the host,
    is switched off. With ``None`` (e.g. an evaluation run from inside a
    training epoch) every check is immediate again and validation is restored
    to what it was outside the outermost deferred block.
    """
    outer = _MONITOR.get()
    validate = outer[1] if outer is not None else Distribution._validate_args
    token = _MONITOR.set(None if monitor is None else (monitor, validate))
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(validate if monitor is None else False)
    try:
        yield monitor
    finally:
        Distribution.set_default_validate_args(previous)
        _MONITOR.reset(token)


def checks_deferred() -> bool:
    """True inside :func:`deferred_checks` with a monitor (the training step's hot path)."""
    return _MONITOR.get() is not None


def check_finite(name: str, value: torch.Tensor, message: Optional[str] = None) -> None:
    """Raise ``FloatingPointError`` if ``value`` has a NaN or inf, or record it in the active monitor.

    Outside :func:`deferred_checks` this reads the value back (one sync);
    inside, it only records ``name`` on the device for the caller's next
    :meth:`FiniteMonitor.tripped`.
    """
    active = _MONITOR.get()
    if active is not None:
        active[0].record(name, value)
    elif not torch.isfinite(value).all():
        raise FloatingPointError(message or f"{name} is non-finite")
