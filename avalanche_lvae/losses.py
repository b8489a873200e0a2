"""The student's objective (docs/method.md), in nats per sample.

- :func:`negative_joint_bound`: -[ELBO + log p(y|z)], CCL-GM Eq. 4, split into
  its terms (Bernoulli reconstruction, KL of z_c to N(0, I), KL of z_d to the
  uniform categorical, classification).
- :func:`consistency_kl`: KL[q_student(z_d|x~) || q_teacher(z_d|x~)], LGM
  Eq. 10 / 13, zero-padding the teacher when z_d has grown.
- :func:`continuous_consistency_kl`: the Gaussian form (LGM Eq. 11) for z_c.
- :func:`information_restriction`: L_I of LGM Eq. 9;
  :func:`frozen_batchnorm_statistics` keeps its extra pass out of BatchNorm's
  running statistics.
- :class:`JointBoundLoss`: an ``nn.Module`` criterion, so any Avalanche
  template (``Naive``, ``Cumulative``, ``EWCPlugin``'s importance pass) can
  train a :class:`~avalanche_lvae.models.LifelongVAE` on the joint bound.

Every density and KL comes from ``torch.distributions``.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from .models import LifelongVAE, LVAEOutput
from .validation import check_images, check_labels, check_non_negative_float, check_positive_int, checks_deferred

__all__ = [
    "JointBound",
    "negative_joint_bound",
    "consistency_kl",
    "continuous_consistency_kl",
    "information_restriction",
    "frozen_batchnorm_statistics",
    "distillation_loss",
    "JointBoundLoss",
]


@dataclass
class JointBound:
    """The terms of the negative joint bound, each in nats.

    Each field is a ``[N]`` tensor (one value per sample) or, after
    :meth:`mean`, a scalar.
    """

    reconstruction: torch.Tensor  # -E_q[log p(x|z)]
    continuous_kl: torch.Tensor  # KL(q(z_c|x) || N(0, I))
    discrete_kl: torch.Tensor  # KL(q(z_d|x) || Cat(1/J))
    classification: torch.Tensor  # -E_q[log p(y|z)]; zero when no labels are given

    @property
    def negative_elbo(self) -> torch.Tensor:
        """-ELBO = reconstruction + both KL terms."""
        return self.reconstruction + self.continuous_kl + self.discrete_kl

    @property
    def total(self) -> torch.Tensor:
        """-[ELBO + log p(y|z)], the quantity the student minimises (CCL-GM Eq. 4)."""
        return self.negative_elbo + self.classification

    def mean(self, weights: Optional[torch.Tensor] = None) -> "JointBound":
        """Average every term over the batch, optionally with per-sample ``weights`` summing to 1."""
        if weights is None:
            return JointBound(**{f.name: getattr(self, f.name).mean() for f in fields(self)})
        return JointBound(**{f.name: (getattr(self, f.name) * weights).sum() for f in fields(self)})

    def as_dict(self) -> dict:
        """Scalar terms as floats, plus ``negative_elbo`` and ``total`` (for logging)."""
        out = {f.name: float(getattr(self, f.name).mean()) for f in fields(self)}
        out.update(negative_elbo=float(self.negative_elbo.mean()), total=float(self.total.mean()))
        return out


def negative_joint_bound(output: LVAEOutput, x: torch.Tensor, targets: Optional[torch.Tensor] = None,
                         class_temperatures: Optional[torch.Tensor] = None) -> JointBound:
    """Per-sample terms of -[ELBO(x) + log p(y|z)] (CCL-GM Eq. 4).

    Args:
        output: the model's forward pass on ``x``.
        x: the images, pixels in [0, 1] (the Bernoulli targets).
        targets: ``[N]`` integer labels, ``[N, num_classes]`` soft labels (rows
            summing to 1, e.g. the teacher's replay labels), or None for the
            plain ELBO.
        class_temperatures: optional ``[N]`` per-row temperatures T: with soft
            targets p, row i's classification term becomes the distillation loss
            T^2 KL[p || softmax(logits / T)] (Hinton et al. 2015), which equals
            the cross-entropy at T = 1 for one-hot targets.
    """
    check_images(x, tuple(output.reconstruction_logits.shape[1:]), "negative_joint_bound")
    if x.shape[0] != len(output):
        raise ValueError(f"negative_joint_bound: {x.shape[0]} images but the output has {len(output)} rows.")
    return _joint_bound_terms(output, x, targets, class_temperatures)


def _joint_bound_terms(output: LVAEOutput, x: torch.Tensor, targets: Optional[torch.Tensor],
                       class_temperatures: Optional[torch.Tensor] = None) -> JointBound:
    """:func:`negative_joint_bound` without the image checks, for images already checked."""
    # Grey-scale pixels are not binary: the Bernoulli log-likelihood is still
    # the (negative) binary cross-entropy, so the support check is switched off.
    likelihood = Bernoulli(logits=output.reconstruction_logits, validate_args=False)
    reconstruction = -likelihood.log_prob(x).flatten(1).sum(-1)
    prior_c = Normal(torch.zeros_like(output.continuous_loc), torch.ones_like(output.continuous_scale))
    continuous_kl = kl_divergence(output.continuous_posterior, prior_c).sum(-1)
    prior_d = Categorical(logits=torch.zeros_like(output.discrete_logits))
    discrete_kl = kl_divergence(output.discrete_posterior, prior_d)
    if class_temperatures is None:
        classification = _classification_nll(output.class_logits, targets)
    else:
        classification = distillation_loss(output.class_logits, targets, class_temperatures)
    return JointBound(reconstruction, continuous_kl, discrete_kl, classification)


def _classification_nll(class_logits: torch.Tensor, targets: Optional[torch.Tensor]) -> torch.Tensor:
    if targets is None:
        return torch.zeros(class_logits.shape[0], device=class_logits.device)
    predictive = Categorical(logits=class_logits)
    num_classes = class_logits.shape[-1]
    if targets.dim() == 2 and torch.is_floating_point(targets):
        if targets.shape != class_logits.shape:
            raise ValueError(
                f"soft targets have shape {tuple(targets.shape)}, expected {tuple(class_logits.shape)} "
                "([batch, num_classes])."
            )
        # Skipped inside the training step (validation.deferred_checks): the soft
        # targets there are the teacher's softmax, and each check is a host sync.
        if not checks_deferred() and (not torch.isfinite(targets).all() or (targets < 0).any() or not torch.allclose(
            targets.sum(-1), torch.ones_like(targets[:, 0]), atol=1e-4
        )):
            raise ValueError("soft targets must be finite, non-negative and sum to 1 per row (probabilities).")
        # Cross-entropy against soft labels: -sum_y p_teacher(y) log p_student(y|z).
        return -(targets * predictive.logits).sum(-1)
    check_labels(targets, num_classes, "negative_joint_bound targets")
    if targets.shape[0] != class_logits.shape[0]:
        raise ValueError(f"{targets.shape[0]} labels for {class_logits.shape[0]} samples.")
    return -predictive.log_prob(targets)


def distillation_loss(class_logits: torch.Tensor, targets: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """Per-row T^2 KL[p || softmax(logits / T)] for soft targets p (Hinton et al. 2015).

    The targets are the teacher's probabilities at the same temperature,
    softmax(teacher_logits / T); the T^2 factor keeps the gradient's scale
    independent of T. With T = 1 and one-hot p it is the cross-entropy.
    """
    if not (targets.dim() == 2 and torch.is_floating_point(targets) and targets.shape == class_logits.shape):
        raise ValueError(f"distillation needs soft targets of shape {tuple(class_logits.shape)}, "
                         f"got {tuple(targets.shape)} {targets.dtype}.")
    if temperatures.shape != (class_logits.shape[0],) or (not checks_deferred() and not (temperatures > 0).all()):
        raise ValueError(f"class_temperatures must be [{class_logits.shape[0]}] positive values, "
                         f"got shape {tuple(temperatures.shape)}.")
    t = temperatures.unsqueeze(-1)
    log_student = torch.log_softmax(class_logits / t, dim=-1)
    kl = (torch.xlogy(targets, targets) - targets * log_student).sum(-1)
    return temperatures.square() * kl


def _padded_teacher_log_probs(teacher_logits: torch.Tensor, size: int, padding_mass: float) -> torch.Tensor:
    """log q_teacher(z_d|x~) padded to ``size`` values, computed in log space.

    The new values get ``padding_mass`` each and the teacher's own mass is
    scaled by 1 - padding_mass * (number of new values) to keep a
    distribution (docs/method.md: padding the log-softmax with 0 would give
    the new values probability 1). Everything stays a log: a teacher
    probability below float32's smallest number (a logit gap above ~104)
    is a finite, very negative log, not a 0 whose log is -inf.
    """
    log_probs = teacher_logits.log_softmax(-1)
    missing = size - log_probs.shape[-1]
    if missing == 0:
        return log_probs
    pad = log_probs.new_full((*log_probs.shape[:-1], missing), math.log(padding_mass))
    return torch.cat([log_probs + math.log1p(-padding_mass * missing), pad], dim=-1)


def consistency_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    reverse: bool = True,
    padding_mass: float = 1e-6,
) -> torch.Tensor:
    """Per-sample KL between the categorical posteriors of student and teacher over z_d.

    ``reverse=True`` (default, LGM Eq. 10) gives KL[q_student || q_teacher];
    ``reverse=False`` the forward KL[q_teacher || q_student] (App. 9.9: same
    results). When the student's z_d has more values than the teacher's, the
    teacher is padded with ``padding_mass`` per new value, so the reverse KL
    stays finite.

    Computed from log-softmax values, KL[p || q] = sum_j p_j (log p_j - log q_j)
    with p_j = exp(log p_j): exact for any logit gap. (``Categorical(probs=...)``
    clamps probabilities at float32's eps, i.e. log q at about -15.9, which
    caps the KL however confident the teacher is, and its KL returns inf
    once a teacher probability underflows to 0.)
    """
    if student_logits.dim() != 2 or teacher_logits.dim() != 2 or student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            f"consistency_kl expects [N, J_student] and [N, J_teacher] logits, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}."
        )
    if teacher_logits.shape[1] > student_logits.shape[1]:
        raise ValueError(
            f"the teacher has {teacher_logits.shape[1]} discrete values but the student only "
            f"{student_logits.shape[1]}; the student's z_d must be at least as large (grow it, never shrink)."
        )
    if not 0 < padding_mass < 1.0 / student_logits.shape[1]:
        raise ValueError(f"padding_mass must be in (0, 1/J), got {padding_mass!r}.")
    student = student_logits.log_softmax(-1)
    teacher = _padded_teacher_log_probs(teacher_logits, student_logits.shape[1], padding_mass)
    first, second = (student, teacher) if reverse else (teacher, student)
    # A value with probability 0 (exp underflow) contributes 0 * finite = 0, as it should.
    return (first.exp() * (first - second)).sum(-1)


def continuous_consistency_kl(student: Normal, teacher: Normal, reverse: bool = True) -> torch.Tensor:
    """Per-sample KL between diagonal Gaussian posteriors of z_c (LGM Eq. 11), summed over dimensions."""
    if not isinstance(student, Normal) or not isinstance(teacher, Normal) or student.loc.shape != teacher.loc.shape:
        raise ValueError(
            "continuous_consistency_kl expects two torch.distributions.Normal of the same shape [N, continuous_dim], "
            f"got {type(student).__name__} {tuple(getattr(student, 'batch_shape', ()))} and "
            f"{type(teacher).__name__} {tuple(getattr(teacher, 'batch_shape', ()))}."
        )
    kl = kl_divergence(student, teacher) if reverse else kl_divergence(teacher, student)
    return kl.sum(-1)


@contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Run extra training-mode passes without touching BatchNorm running statistics.

    Inside the block every BatchNorm module of ``model`` still normalises with
    the statistics of the batch it sees (exactly the training-mode forward and
    gradient), but ``track_running_stats`` is off, so its ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` are neither read nor written.
    The flags are restored on exit, also after an error.

    Why this way: the running statistics are what evaluation and the teacher
    (a copy of the student) normalise with, so they must describe the
    minibatches the student trains on, not an extra pass over generated
    images (L_I's prior samples). Eval mode instead would change the pass
    itself (normalising with running statistics); momentum 0 would still
    count ``num_batches_tracked`` and turn a NaN batch statistic into NaN
    buffers (0 * NaN); saving and restoring the buffers copies them on every
    pass. Switching tracking off touches nothing and changes nothing else.
    """
    modules = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    flags = [m.track_running_stats for m in modules]
    try:
        for m in modules:
            m.track_running_stats = False
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.track_running_stats = flag


def information_restriction(model: LifelongVAE, n: int, component: Optional[int] = None) -> torch.Tensor:
    """L_I of LGM Eq. 9: E_{x^ ~ p(x|z_d, z_c)} E_q [log q(z_c | x^)], in nats.

    Draws z = [z_c, z_d] from the prior (z_d spread evenly over the components
    unless ``component`` is given), decodes the Bernoulli mean x^, re-encodes
    it and scores the z_c that produced it. Minimising lambda * L_I restricts
    the information z_c carries about the generated image, so the decoder must
    use z_d to tell the distributions apart (LGM Sec. 4.4). The passes leave
    BatchNorm's running statistics alone (:func:`frozen_batchnorm_statistics`).

    L_I + H(z_c) is a *lower* bound on I(z_c; x^), and minimising a lower
    bound only restricts the information while the bound is tight. So the
    returned value is L_I, but its gradient is split: the decoder minimises
    it, while the encoder -- the variational estimator q -- *maximises* it
    (its gradient is reversed), i.e. keeps recovering z_c from generated
    images as well as it can. Measured, both other choices fail:

    - encoder minimising too: it drives log q(z_c|x^) to -inf by shrinking its
      scale, and training diverged within one epoch (test accuracy 0.14 vs
      0.82 on a 6k-image MNIST slice);
    - decoder only, encoder frozen: the decoder learned images on which the
      fixed encoder fails; L_I fell to -1e9 in the 5th experience of a 5-epoch
      permuted MNIST run and the accuracy collapsed from 0.95 to 0.69.
    """
    if not isinstance(model, LifelongVAE):
        raise ValueError(f"information_restriction needs an avalanche_lvae.LifelongVAE, got {type(model).__name__}.")
    check_positive_int(n, "n")
    z_continuous, z_discrete, _ = model.sample_latent(n, component)
    # Generated images are not the data: the pass leaves BatchNorm's running statistics alone.
    with frozen_batchnorm_statistics(model):
        generated = torch.sigmoid(model.decode(z_continuous, z_discrete))
        # One encoder pass serves both players: the term is computed on x^ behind a
        # gradient-reversal layer and negated, so the encoder's parameters receive
        # -dL_I while the decoder, through the reversed input gradient, receives +dL_I.
        reversed_term = -_log_q_continuous(model, _ReverseGradient.apply(generated), z_continuous)
    # Value L_I (= -reversed_term), gradient that of reversed_term.
    return -2 * reversed_term.detach() + reversed_term


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward (the gradient-reversal layer of Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _log_q_continuous(model: LifelongVAE, images: torch.Tensor, z_continuous: torch.Tensor) -> torch.Tensor:
    loc, scale, _ = model.encode(images)
    # No argument validation: should the weights diverge, the NaN must reach
    # the loss, where the strategy's guard names this term, rather than raise
    # an anonymous constraint error here.
    return Normal(loc, scale, validate_args=False).log_prob(z_continuous).sum(-1).mean()


class JointBoundLoss(nn.Module):
    """Criterion: -[ELBO(x) + log p(y|z)] averaged over the minibatch, in nats per sample.

    Called Avalanche's way, ``criterion(output, targets)``: ``output`` is the
    :class:`~avalanche_lvae.models.LVAEOutput` (which carries its input images)
    and ``targets`` hard labels ``[N]`` or soft labels ``[N, num_classes]``.
    Optional ``sample_weights`` (``[N]``, summing to 1) replace the plain mean;
    the replay plugin uses them to give every distribution the same share.
    Optional ``reconstruction_targets`` (the shape of ``output.inputs``) are
    the images the Bernoulli reconstruction term scores instead of the inputs;
    the replay plugin's ``temperature`` uses them. Optional
    ``class_temperatures`` (``[N]``) turn the classification term into
    :func:`distillation_loss` (the replay plugin's ``distillation_temperature``).
    The last call's terms are kept in ``last_terms`` for logging.

    Args:
        classification_weight: weight of -log p(y|z); 1 gives the joint bound
            of CCL-GM Eq. 4, 0 the plain ELBO.
    """

    def __init__(self, classification_weight: float = 1.0):
        super().__init__()
        self.classification_weight = check_non_negative_float(classification_weight, "classification_weight")
        self.last_terms: Optional[JointBound] = None

    def forward(
        self,
        output: LVAEOutput,
        targets: torch.Tensor,
        sample_weights: Optional[torch.Tensor] = None,
        reconstruction_targets: Optional[torch.Tensor] = None,
        class_temperatures: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if not isinstance(output, LVAEOutput):
            raise ValueError(
                f"JointBoundLoss needs the LifelongVAE's LVAEOutput, got {type(output).__name__}; "
                "train a LifelongVAE with avalanche_lvae.LifelongVAEStrategy, LVAENaive or LVAECumulative."
            )
        # The value checks are host syncs: inside the training step
        # (validation.deferred_checks) only the shape is checked, and a
        # non-finite weight reaches the loss, which the step's monitor names.
        if sample_weights is not None and (
            sample_weights.shape != (len(output),)
            or (not checks_deferred() and (not torch.isfinite(sample_weights).all() or (sample_weights < 0).any()))
        ):
            raise ValueError(
                f"sample_weights must be a [{len(output)}] tensor of finite non-negative weights (one per row, "
                f"summing to 1), got shape {tuple(sample_weights.shape)}."
            )
        if reconstruction_targets is None:
            # output.inputs are the images LifelongVAE.forward checked (shape, range,
            # finiteness) on this very minibatch: not checked a second time.
            reconstruction_targets = output.inputs
        elif reconstruction_targets.shape != output.inputs.shape:
            raise ValueError(
                f"reconstruction_targets must have the inputs' shape {tuple(output.inputs.shape)}, "
                f"got {tuple(reconstruction_targets.shape)}."
            )
        terms = _joint_bound_terms(output, reconstruction_targets, targets, class_temperatures).mean(sample_weights)
        self.last_terms = terms
        return terms.negative_elbo + self.classification_weight * terms.classification
