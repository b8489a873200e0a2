"""Helpers shared by the metrics: model checks, evaluation mode, file names.

:func:`evaluation_mode` is also what any evaluation-time computation outside
the metrics uses (e.g. :class:`~avalanche_lvae.plugins.ComponentPriorPlugin`)
to leave the training run untouched.
"""

import itertools
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn

from ..models import LifelongVAE

__all__ = ["require_lifelong_vae", "require_generator", "evaluation_mode", "generate", "trained_experience_index"]


def require_lifelong_vae(model: nn.Module, metric: str) -> LifelongVAE:
    """Return ``model`` if it is a :class:`LifelongVAE`, else raise a ``ValueError`` naming ``metric``.

    The likelihood metrics need the encoder q(z|x) and the decoder p(x|z),
    which a plain classifier (e.g. Avalanche's ``SimpleMLP``) does not have.
    """
    if not isinstance(model, LifelongVAE):
        raise ValueError(
            f"{metric} needs an avalanche_lvae.LifelongVAE (encoder q(z|x) and decoder p(x|z)), but the "
            f"strategy's model is a {type(model).__name__}, which cannot compute an ELBO or generate images. "
            "Use this metric only with LifelongVAEStrategy / LVAENaive / LVAECumulative (or Avalanche "
            "strategies over a LifelongVAE)."
        )
    return model


def require_generator(model: nn.Module, metric: str) -> nn.Module:
    """Return ``model`` if it can generate (a :class:`LifelongVAE` or any module with ``.sample(n)``).

    Raises:
        ValueError: the model cannot generate images; the message names ``metric``.
    """
    if isinstance(model, LifelongVAE) or callable(getattr(model, "sample", None)):
        return model
    raise ValueError(
        f"{metric} needs a generative model -- an avalanche_lvae.LifelongVAE or a model with a "
        f".sample(n) method returning images in [0, 1] -- but the strategy's model is a "
        f"{type(model).__name__}, which cannot generate images."
    )


@contextmanager
def evaluation_mode(*models: Optional[nn.Module]) -> Iterator[None]:
    """Put ``models`` in eval mode under ``torch.no_grad()`` with a forked RNG; restore everything after.

    Metrics must not change the state a strategy relies on: a metric that
    runs while the model is training (e.g. Avalanche's periodic eval) leaves
    it training, BatchNorm statistics are never updated by a metric, and the
    random numbers it draws (z for an ELBO estimate, prior samples for the
    Frechet distance or a grid) come from a fork of the global RNG -- the CPU
    generator and those of the CUDA devices the models live on -- so that
    switching a metric on does not change the training run.
    """
    models = [m for m in models if m is not None]
    flags = [m.training for m in models]
    cuda_devices = sorted({t.device.index or 0 for m in models for t in itertools.chain(m.parameters(), m.buffers())
                           if t.device.type == "cuda"})
    try:
        for m in models:
            m.eval()
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            yield
    finally:
        for m, flag in zip(models, flags):
            m.train(flag)


def generate(model: nn.Module, n: int) -> torch.Tensor:
    """Draw ``n`` images from ``model`` (no gradients, eval mode, mode restored).

    A :class:`LifelongVAE` spreads the rows evenly over its ``discrete_dim``
    components (z_d fixed per row, z_c ~ N(0, I), LGM Sec. 4.3) and returns
    Bernoulli means in [0, 1]. Another model's ``.sample(n)`` may return the
    images or a tuple whose first item is the images.
    """
    with evaluation_mode(model):
        out = model.sample(n)
    images = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(images, torch.Tensor) or images.shape[0] != n:
        raise ValueError(
            f"{type(model).__name__}.sample({n}) must return {n} images (a tensor, or a tuple whose first item "
            f"is that tensor), got {type(images).__name__}."
        )
    return images


def trained_experience_index(strategy) -> int:
    """Index of the last training experience the strategy completed (-1 before any training).

    Used in file names, so that the grids saved after each experience sit side by side.
    """
    return int(strategy.clock.train_exp_counter) - 1
