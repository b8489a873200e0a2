"""What one forward pass of the LifelongVAE produces."""

from dataclasses import dataclass

import torch
from torch.distributions import Categorical, Normal

__all__ = ["LVAEOutput"]


@dataclass
class LVAEOutput:
    """Everything one forward pass produces.

    Attributes:
        class_logits: ``[N, num_classes]`` logits of p(y|z); this is what
            Avalanche's accuracy metrics read as ``strategy.mb_output``.
        reconstruction_logits: ``[N, *input_shape]`` Bernoulli logits of p(x|z).
        continuous_loc, continuous_scale: ``[N, continuous_dim]`` parameters of q(z_c|x).
        discrete_logits: ``[N, discrete_dim]`` logits of q(z_d|x).
        z_continuous, z_discrete: the latent sample the decoder and classifier read.
        inputs: the images the pass was computed on (the Bernoulli targets), so
            that a criterion called as ``criterion(output, y)`` -- Avalanche's
            convention -- can score the reconstruction.
    """

    class_logits: torch.Tensor
    reconstruction_logits: torch.Tensor
    continuous_loc: torch.Tensor
    continuous_scale: torch.Tensor
    discrete_logits: torch.Tensor
    z_continuous: torch.Tensor
    z_discrete: torch.Tensor
    inputs: torch.Tensor

    @property
    def continuous_posterior(self) -> Normal:
        """q(z_c|x) as a ``torch.distributions.Normal`` (one per latent dimension)."""
        return Normal(self.continuous_loc, self.continuous_scale)

    @property
    def discrete_posterior(self) -> Categorical:
        """q(z_d|x) as a ``torch.distributions.Categorical``."""
        return Categorical(logits=self.discrete_logits)

    def __len__(self) -> int:
        return self.class_logits.shape[0]
