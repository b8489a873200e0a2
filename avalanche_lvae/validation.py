"""Input checks shared by the model, the losses and the strategy.

Every check raises ``ValueError`` with a message that names the problem *and*
the fix: a silent wrong result (e.g. a Bernoulli likelihood evaluated on
normalised pixels) or a NaN loss several epochs later is far more expensive
for a lifelong run than an immediate, readable error.
"""

from numbers import Real
from typing import Sequence

import torch

__all__ = [
    "check_images",
    "check_labels",
    "check_positive_int",
    "check_positive_float",
    "check_non_negative_float",
    "check_bool",
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
