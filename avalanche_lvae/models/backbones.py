"""Encoder and decoder bodies of the paper's two architectures (LGM App. 9.3).

The bodies stop short of the latent: the encoder maps an image to a feature
vector, and the decoder maps a (pre-activation) hidden vector, produced by a
:class:`LatentProjection` from ``[z_c, z_d]``, to Bernoulli logits. Keeping
the latent-adjacent layers out of the bodies is what lets
``LifelongVAE.grow_discrete`` re-initialise only those layers.
"""

import math
from typing import Sequence, Tuple

import torch
from torch import nn

from .activations import ELU

__all__ = ["LatentProjection", "DENSE_NORMALIZATIONS", "DenseEncoder", "DenseDecoder", "ConvEncoder", "ConvDecoder"]


class LatentProjection(nn.Module):
    """A linear layer on ``[z_c, z_d]``, stored as two blocks.

    ``Linear(cat([z_c, z_d]))`` equals ``continuous(z_c) + discrete(z_d)``; the
    split keeps the weights that read ``z_d`` in their own layer so that growing
    ``z_d`` re-initialises only them (docs/method.md, "Which weights growth re-initialises") while the
    continuous block is copied unchanged.
    """

    def __init__(self, continuous_dim: int, discrete_dim: int, out_features: int):
        super().__init__()
        self.continuous = nn.Linear(continuous_dim, out_features)
        self.discrete = nn.Linear(discrete_dim, out_features, bias=False)

    def forward(self, z_continuous: torch.Tensor, z_discrete: torch.Tensor) -> torch.Tensor:
        return self.continuous(z_continuous) + self.discrete(z_discrete)

    def grow_discrete(self, new_discrete_dim: int) -> None:
        """Replace the z_d block by a Glorot-initialised one of the new size."""
        old = self.discrete.weight
        self.discrete = glorot_linear(new_discrete_dim, old.shape[0], bias=False).to(old)


def glorot_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A ``nn.Linear`` with Glorot (Xavier) uniform weights and zero bias."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


DENSE_NORMALIZATIONS = ("batch", "layer")


def dense_normalization(kind: str, features: int) -> nn.Module:
    """The normalisation of a dense hidden layer: ``"batch"`` (BatchNorm, App. 9.3) or ``"layer"`` (LayerNorm,
    no running statistics)."""
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.LayerNorm(features)
    raise ValueError(f"normalization must be one of {DENSE_NORMALIZATIONS}, got {kind!r}.")


def _dense_block(in_features: int, out_features: int, normalization: str) -> nn.Sequential:
    # Linear -> normalisation (BatchNorm in App. 9.3) -> ELU on every hidden layer.
    return nn.Sequential(nn.Linear(in_features, out_features), dense_normalization(normalization, out_features), ELU())


class DenseEncoder(nn.Module):
    """Flatten, then two ``hidden_dim`` layers with ``normalization`` (BatchNorm by default) + ELU."""

    def __init__(self, input_shape: Sequence[int], hidden_dim: int, normalization: str = "batch"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), _dense_block(math.prod(input_shape), hidden_dim, normalization),
            _dense_block(hidden_dim, hidden_dim, normalization),
        )
        self.out_features = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DenseDecoder(nn.Module):
    """``normalization`` (BatchNorm by default) + ELU on the projected latent, one more hidden layer, then pixel
    logits."""

    def __init__(self, input_shape: Sequence[int], hidden_dim: int, normalization: str = "batch"):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.in_features = hidden_dim
        self.net = nn.Sequential(
            dense_normalization(normalization, hidden_dim),
            ELU(),
            _dense_block(hidden_dim, hidden_dim, normalization),
            nn.Linear(hidden_dim, math.prod(input_shape)),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).view(-1, *self.input_shape)


def _conv_block(conv: nn.Module, channels: int) -> nn.Sequential:
    # GroupNorm instead of BatchNorm for the conv stack (App. 9.3, Eq. 14).
    return nn.Sequential(conv, nn.GroupNorm(_groups(channels), channels), ELU())


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


PAPER_CONV_WIDTH = 32


def _scaled(layers, width: int):
    # Eq. 14's channel counts are multiples of its first layer's 32 filters
    # (the authors' code exposes that base as ``filter_depth``); ``width``
    # replaces the 32 and scales every layer alike.
    return tuple((max(1, out * width // PAPER_CONV_WIDTH), kernel, stride) for out, kernel, stride in layers)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # oneDNN's convolutions run faster on NHWC than on NCHW on CPU (benchmarks/speed.py --conv-only).
    return x.contiguous(memory_format=torch.channels_last)


class ConvEncoder(nn.Module):
    """The convolutional encoder of LGM App. 9.3, Eq. 14 ``[out, kernel, stride]``:
    [32,5,1] [64,4,2] [128,4,1] [256,4,2] [512,1,1] [512,1,1], GroupNorm + ELU between.

    ``width`` is the first layer's filter count (32 in Eq. 14); every layer's
    channels scale with it. Activations and weights are kept channels-last.
    """

    _LAYERS: Tuple[Tuple[int, int, int], ...] = ((32, 5, 1), (64, 4, 2), (128, 4, 1), (256, 4, 2), (512, 1, 1))

    def __init__(self, input_shape: Sequence[int], hidden_dim: int, width: int = PAPER_CONV_WIDTH):
        super().__init__()
        channels, layers = input_shape[0], []
        for out, kernel, stride in _scaled(self._LAYERS, width):
            layers.append(_conv_block(nn.Conv2d(channels, out, kernel, stride), out))
            channels = out
        layers += [nn.Conv2d(channels, hidden_dim, 1), nn.Flatten()]
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.out_features = self.net(_channels_last(torch.zeros(1, *input_shape))).shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_channels_last(x))


class ConvDecoder(nn.Module):
    """The transposed-convolution decoder of LGM App. 9.3, Eq. 14: from a 1x1 map,
    [256,4,1] [128,4,2] [64,4,1] [32,4,2] [32,5,1] [C,1,1], which yields 32x32;
    28x28 inputs are centre-cropped from it. ``width`` scales the channels as
    in :class:`ConvEncoder`."""

    _LAYERS: Tuple[Tuple[int, int, int], ...] = ((256, 4, 1), (128, 4, 2), (64, 4, 1), (32, 4, 2), (32, 5, 1))
    OUTPUT_SIZE = 32

    def __init__(self, input_shape: Sequence[int], hidden_dim: int, width: int = PAPER_CONV_WIDTH):
        super().__init__()
        channels, height, image_width = input_shape
        if height > self.OUTPUT_SIZE or image_width > self.OUTPUT_SIZE:
            raise ValueError(
                f"arch='conv' supports images up to {self.OUTPUT_SIZE}x{self.OUTPUT_SIZE}, got {height}x{image_width}; "
                "resize the data or use arch='dense'."
            )
        self.input_shape = tuple(input_shape)
        self.in_features = hidden_dim
        layers, previous = [nn.GroupNorm(_groups(hidden_dim), hidden_dim), ELU()], hidden_dim
        for out, kernel, stride in _scaled(self._LAYERS, width):
            layers.append(_conv_block(nn.ConvTranspose2d(previous, out, kernel, stride), out))
            previous = out
        layers.append(nn.ConvTranspose2d(previous, channels, 1))
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self._top = (self.OUTPUT_SIZE - height) // 2
        self._left = (self.OUTPUT_SIZE - image_width) // 2

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.net(_channels_last(h.view(h.shape[0], -1, 1, 1)))
        _, height, width = self.input_shape
        return logits[:, :, self._top : self._top + height, self._left : self._left + width]
