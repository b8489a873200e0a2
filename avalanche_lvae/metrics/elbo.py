"""Negative test ELBO and its importance-weighted version, as Avalanche plugin metrics.

The papers report the negative ELBO in nats on the test sets of every
distribution seen so far (docs/method.md; LGM Sec. 6). These metrics do their
own forward pass under ``torch.no_grad()`` in ``after_eval_iteration`` rather
than reading ``strategy.loss``: the strategy's loss includes the
classification term (CCL-GM Eq. 4), and an Avalanche ``Naive`` over a
``LifelongVAE`` may be used with any criterion.
"""

import math
from typing import List

import torch
from avalanche.evaluation import GenericPluginMetric, Metric
from avalanche.evaluation.metrics.mean import Mean
from torch.distributions import Bernoulli, Normal, OneHotCategorical

from ..losses import negative_joint_bound
from ..models import LifelongVAE
from ..validation import check_positive_int
from .utils import evaluation_mode, require_lifelong_vae

__all__ = [
    "negative_elbo",
    "importance_weighted_bound",
    "NegELBO",
    "ExperienceNegELBO",
    "StreamNegELBO",
    "neg_elbo_metrics",
]

# Rows decoded at once by the importance-weighted bound (K samples x batch).
_DECODE_ROWS = 8192


def importance_weighted_bound(model: LifelongVAE, x: torch.Tensor, importance_samples: int) -> torch.Tensor:
    """Per-sample importance-weighted lower bound on log p(x) (IWAE, Burda et al. 2016), in nats.

    L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

    with z = [z_c, z_d], q(z|x) = q(z_c|x) q(z_d|x) (LGM Sec. 4.3). z_c is
    drawn from the Gaussian posterior and z_d *hard* from the categorical
    posterior (``OneHotCategorical``); the priors are N(0, I) and the uniform
    Cat(1/J). Every density comes from ``torch.distributions``. L_K grows with
    K towards log p(x) in expectation, and L_1 has the ELBO's expectation.

    Call it with the model in eval mode (BatchNorm running statistics) and,
    for evaluation, under ``torch.no_grad()`` -- :func:`negative_elbo` does both.

    Returns:
        ``[N]`` tensor of L_K(x) (a log-likelihood bound: higher is better).
    """
    k_total = check_positive_int(importance_samples, "importance_samples")
    loc, scale, discrete_logits = model.encode(x)
    q_c, q_d = Normal(loc, scale), OneHotCategorical(logits=discrete_logits)
    p_c = Normal(torch.zeros_like(loc), torch.ones_like(scale))
    p_d = OneHotCategorical(logits=torch.zeros_like(discrete_logits))
    n = x.shape[0]
    chunk = max(1, _DECODE_ROWS // max(n, 1))
    log_weights: List[torch.Tensor] = []
    for start in range(0, k_total, chunk):
        k = min(chunk, k_total - start)
        z_c, z_d = q_c.sample((k,)), q_d.sample((k,))  # [k, N, ...]
        logits = model.decode(z_c.flatten(0, 1), z_d.flatten(0, 1)).unflatten(0, (k, n))
        # Grey-scale pixels are not binary: the Bernoulli log-likelihood is the
        # negative binary cross-entropy, so the support check is off (as in the loss).
        log_px = Bernoulli(logits=logits, validate_args=False).log_prob(x.expand_as(logits)).flatten(2).sum(-1)
        log_prior = p_c.log_prob(z_c).sum(-1) + p_d.log_prob(z_d)
        log_posterior = q_c.log_prob(z_c).sum(-1) + q_d.log_prob(z_d)
        log_weights.append(log_px + log_prior - log_posterior)
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k_total)


def negative_elbo(model: LifelongVAE, x: torch.Tensor, importance_samples: int = 1) -> torch.Tensor:
    """Per-sample negative (importance-weighted) ELBO of ``x`` in nats, without gradients.

    ``importance_samples=1`` is the training objective's ELBO with its
    *analytic* KL terms: one ``model(x, sample=True)`` pass in eval mode scored
    by :func:`avalanche_lvae.losses.negative_joint_bound`, so the value equals
    the loss's ``negative_elbo`` on the same sample. The single-sample
    importance weight log p(x,z)/q(z|x) has the same expectation but a larger
    variance, which is why K=1 takes the analytic path.
    ``importance_samples=K > 1`` gives -L_K (:func:`importance_weighted_bound`),
    a tighter bound: -L_K <= -ELBO in expectation.

    The model is put in eval mode and restored afterwards.
    """
    check_positive_int(importance_samples, "importance_samples")
    with evaluation_mode(model):
        if importance_samples == 1:
            return negative_joint_bound(model(x, sample=True), x).negative_elbo
        return -importance_weighted_bound(model, x, importance_samples)


class NegELBO(Metric[float]):
    """Running mean of per-sample negative ELBOs (nats per sample), weighted by sample count."""

    def __init__(self):
        self._mean = Mean()

    @torch.no_grad()
    def update(self, values: torch.Tensor) -> None:
        """Add a ``[N]`` tensor of per-sample negative ELBOs."""
        if values.numel():
            self._mean.update(float(values.mean()), weight=values.numel())

    def result(self) -> float:
        """The mean over every sample since the last reset (0 before any update)."""
        return self._mean.result()

    def reset(self) -> None:
        """Forget every sample."""
        self._mean.reset()


class _NegELBOPluginMetric(GenericPluginMetric[float, NegELBO]):
    """Negative (IW-)ELBO of ``strategy.mb_x`` under ``strategy.model``, during eval only."""

    def __init__(self, reset_at: str, emit_at: str, importance_samples: int = 1):
        self.importance_samples = check_positive_int(importance_samples, "importance_samples")
        super().__init__(NegELBO(), reset_at=reset_at, emit_at=emit_at, mode="eval")

    def update(self, strategy) -> None:
        model = require_lifelong_vae(strategy.model, str(self))
        self._metric.update(negative_elbo(model, strategy.mb_x, self.importance_samples))

    def _label(self) -> str:
        return "NegELBO" if self.importance_samples == 1 else f"NegIWELBO{self.importance_samples}"


class ExperienceNegELBO(_NegELBOPluginMetric):
    """Negative ELBO (nats per sample) on each evaluated experience.

    Emitted after each eval experience as
    ``NegELBO_Exp/eval_phase/<stream>/Task<t>/Exp<e>`` (``NegIWELBO<K>_Exp/...``
    for K importance samples).
    """

    def __init__(self, importance_samples: int = 1):
        super().__init__(reset_at="experience", emit_at="experience", importance_samples=importance_samples)

    def __str__(self):
        return f"{self._label()}_Exp"


class StreamNegELBO(_NegELBOPluginMetric):
    """Negative ELBO (nats per sample) over every sample of the evaluated stream.

    Emitted after each ``strategy.eval`` call as
    ``NegELBO_Stream/eval_phase/<stream>/Task<t>`` (``NegIWELBO<K>_Stream/...``).
    """

    def __init__(self, importance_samples: int = 1):
        super().__init__(reset_at="stream", emit_at="stream", importance_samples=importance_samples)

    def __str__(self):
        return f"{self._label()}_Stream"


def neg_elbo_metrics(
    experience: bool = True, stream: bool = True, importance_samples: int = 1
) -> List[_NegELBOPluginMetric]:
    """Plugin metrics for the negative test ELBO (LGM's main likelihood metric), for an ``EvaluationPlugin``.

    Args:
        experience: emit the value of each evaluated experience.
        stream: emit the value over the whole evaluated stream (all samples
            pooled, i.e. weighted by experience size).
        importance_samples: K. 1 gives the ELBO with analytic KL terms (equal
            to the training loss's ``negative_elbo`` on the same sample of z);
            K > 1 the importance-weighted bound -L_K, tighter (lower) and K
            times as costly.

    The model must be a :class:`~avalanche_lvae.models.LifelongVAE`; any other
    model raises a ``ValueError`` at the first eval iteration.
    """
    metrics: List[_NegELBOPluginMetric] = []
    if experience:
        metrics.append(ExperienceNegELBO(importance_samples))
    if stream:
        metrics.append(StreamNegELBO(importance_samples))
    return metrics
