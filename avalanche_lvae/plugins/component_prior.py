"""Fit one Gaussian p(z_c | z_d = j) per distribution for generation (an option beyond the papers)."""

from typing import Optional

import torch
from avalanche.core import SupervisedPlugin

from ..metrics.utils import evaluation_mode
from ..models import LifelongVAE
from ..preloading import read_tensors
from ..validation import check_positive_int

__all__ = ["ComponentPriorPlugin", "aggregate_posterior_moments"]


def aggregate_posterior_moments(loc: torch.Tensor, scale: torch.Tensor):
    """Mean and covariance of the aggregate posterior (1/N) sum_n N(loc_n, diag(scale_n^2)).

    The exact moments of that Gaussian mixture: the mean of the posterior
    means, and the covariance of the means plus the mean posterior variance
    on the diagonal (law of total covariance).
    """
    return loc.mean(0), torch.cov(loc.T) + torch.diag(scale.pow(2).mean(0))


class ComponentPriorPlugin(SupervisedPlugin, supports_distributed=True):
    """After each experience, make the student generate distribution j from its own z_c region.

    Callbacks:
        ``after_training_exp``: with the trained student in eval mode, fit
        N(mean, covariance) to the aggregate posterior q(z_c | x) of (a) the
        current experience's training images, for the newest z_d value, and
        (b) ``n_samples`` images the teacher generates for every past value j,
        for j; store them with :meth:`LifelongVAE.set_component_prior`. The
        evaluation that follows, the next teacher (a copy of this student)
        and its replay then draw component j's z_c from that Gaussian.

    Why: the papers generate distribution j by fixing z_d = j and drawing
    z_c ~ N(0, I) (LGM Sec. 4.3). When the decoder reads the distribution's
    identity from z_c rather than z_d -- as it does on one-class-per-experience
    streams, where each class's posteriors fill their own part of z_c -- a
    row with z_d fixed mixes all distributions. Drawing z_c from the region
    the encoder uses for distribution j (ex-post density estimation, Ghosh et
    al. 2020) restores class-specific rows without storing any data: only a
    mean and covariance per distribution. Training losses are unchanged.

    Distributed (``supports_distributed``): the fit runs after the epoch, on
    the whole experience, with the random stream all ranks share and a
    student identical on every rank, so every rank stores the same prior.

    Args:
        n_samples: teacher samples per past distribution, and at most this
            many real images of the current experience, used for each fit.
        batch_size: encoder minibatch size while fitting.
        jitter: added to the covariance diagonal so that it stays positive definite.
    """

    def __init__(self, n_samples: int = 2000, batch_size: int = 500, jitter: float = 1e-4):
        super().__init__()
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if not jitter > 0:
            raise ValueError(f"jitter must be > 0 (it keeps the covariance positive definite), got {jitter!r}.")
        self.jitter = float(jitter)

    def after_training_exp(self, strategy, **kwargs):
        student = strategy.model
        if not isinstance(student, LifelongVAE):
            raise ValueError(f"ComponentPriorPlugin needs a LifelongVAE model, got {type(student).__name__}.")
        teacher: Optional[LifelongVAE] = getattr(strategy, "teacher", None)
        newest = student.discrete_dim - 1
        past = min(teacher.discrete_dim, newest) if teacher is not None else 0
        # Eval mode (BatchNorm running statistics, no grad), restored after; a
        # forked RNG (CPU and CUDA), so that fitting does not change the random stream of training.
        with evaluation_mode(student, teacher):
            for component in range(past):
                self._fit(student, component, teacher.sample(self.n_samples, component=component)[0])
            self._fit(student, newest, self._real_images(strategy))

    def _real_images(self, strategy) -> torch.Tensor:
        dataset = strategy.experience.dataset.eval()
        first = dataset.subset(range(min(self.n_samples, len(dataset))))
        return read_tensors(first, self.batch_size)[0].to(strategy.device)

    def _fit(self, student: LifelongVAE, component: int, images: torch.Tensor) -> None:
        encoded = [student.encode(chunk)[:2] for chunk in images.split(self.batch_size)]
        mean, covariance = aggregate_posterior_moments(torch.cat([loc for loc, _ in encoded]),
                                                       torch.cat([scale for _, scale in encoded]))
        covariance = covariance + self.jitter * torch.eye(covariance.shape[0], device=covariance.device)
        student.set_component_prior(component, mean, covariance)
