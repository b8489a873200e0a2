"""Consistency and information-restricting regularisers (LGM Eq. 9, 10)."""

from typing import Optional

from avalanche.core import SupervisedPlugin

from torch.distributions import Normal

from ..losses import consistency_kl, continuous_consistency_kl, information_restriction
from ..models import LVAEOutput
from ..validation import check_bool, check_non_negative_float, check_positive_int

__all__ = ["PosteriorConsistencyPlugin"]


class PosteriorConsistencyPlugin(SupervisedPlugin, supports_distributed=True):
    """Add ``consistency_weight * KL[q_student(z_d|x~) || q_teacher(z_d|x~)] + info_weight * L_I``.

    Callbacks:
        ``before_backward``: the loss of the minibatch already holds the joint
        bound; this adds (1) the consistency KL of LGM Eq. 10 on the replayed
        rows only (``strategy.replay_batch``, filled by
        :class:`TeacherReplayPlugin`; skipped while there is no teacher), which
        distils the teacher's discrete posterior into the student, and (2)
        lambda * L_I (Eq. 9) on ``info_samples`` fresh prior samples of the
        student, which makes the decoder carry distribution identity in z_d.
        The terms are recorded in ``strategy.loss_terms`` for the non-finite
        guard.

    Distributed (``supports_distributed``): both terms are per-row means on
    the rank's shard (L_I on the rank's own prior samples), so the averaged
    gradient is the single-process one over the union of the shards.

    Args:
        consistency_weight: weight of the consistency KL (0 switches it off).
        info_weight: lambda of Eq. 10 (paper: 0.01; 0 switches it off).
        info_samples: prior samples for L_I per iteration; None uses
            ``train_mb_size // 4`` (at least 1) to keep its cost small.
        reverse_kl: KL[student || teacher] (default) or the forward KL.
        continuous_consistency_weight: weight of the Gaussian consistency
            KL[q_student(z_c|x~) || q_teacher(z_c|x~)] (LGM Eq. 11, Lemma 1).
            Eq. 10 regularises z_d only, hence the default 0; a positive value
            also distils the teacher's continuous posterior, which the
            classifier p(y|z) reads.
    """

    def __init__(
        self,
        consistency_weight: float = 1.0,
        info_weight: float = 0.01,
        info_samples: Optional[int] = None,
        reverse_kl: bool = True,
        continuous_consistency_weight: float = 0.0,
    ):
        super().__init__()
        self.consistency_weight = check_non_negative_float(consistency_weight, "consistency_weight")
        self.info_weight = check_non_negative_float(info_weight, "info_weight")
        self.info_samples = None if info_samples is None else check_positive_int(info_samples, "info_samples")
        self.reverse_kl = check_bool(reverse_kl, "reverse_kl")
        self.continuous_consistency_weight = check_non_negative_float(
            continuous_consistency_weight, "continuous_consistency_weight"
        )

    def before_backward(self, strategy, **kwargs):
        replay = getattr(strategy, "replay_batch", None)
        if replay is not None and (self.consistency_weight > 0 or self.continuous_consistency_weight > 0):
            output, rows = student_output(strategy), slice(replay.num_real, None)
            if self.consistency_weight > 0:
                consistency = consistency_kl(
                    output.discrete_logits[rows], replay.teacher_discrete_logits, reverse=self.reverse_kl
                )
                add_loss_term(strategy, "consistency", self.consistency_weight, consistency.mean())
            if self.continuous_consistency_weight > 0:
                student = Normal(output.continuous_loc[rows], output.continuous_scale[rows])
                teacher = Normal(replay.teacher_continuous_loc, replay.teacher_continuous_scale)
                continuous = continuous_consistency_kl(student, teacher, reverse=self.reverse_kl)
                add_loss_term(strategy, "continuous_consistency", self.continuous_consistency_weight, continuous.mean())
        if self.info_weight > 0:
            samples = self.info_samples or max(1, strategy.train_mb_size // 4)
            add_loss_term(strategy, "information", self.info_weight, information_restriction(strategy.model, samples))


def student_output(strategy) -> LVAEOutput:
    """The student's full :class:`LVAEOutput` of the current minibatch, or a ``ValueError`` naming the fix."""
    # LVAETemplateMixin keeps the full output aside (mb_output is the class
    # logits); a plain Avalanche template over a LifelongVAE has it in mb_output.
    output = getattr(strategy, "lvae_output", None)
    output = strategy.mb_output if output is None else output
    if not isinstance(output, LVAEOutput):
        raise ValueError(
            "PosteriorConsistencyPlugin needs a LifelongVAE's output; attach it to a strategy training a "
            "LifelongVAE (LifelongVAEStrategy, LVAENaive, or Naive with criterion=JointBoundLoss())."
        )
    return output


def real_rows(strategy) -> slice:
    """The rows of the current minibatch that hold real (current-distribution) data, not teacher replay."""
    replay = getattr(strategy, "replay_batch", None)
    return slice(None) if replay is None else slice(None, replay.num_real)


def add_loss_term(strategy, name: str, weight: float, value) -> None:
    """Add ``weight * value`` to ``strategy.loss`` and record it in ``strategy.loss_terms[name]``."""
    # Recorded by name so the strategy's non-finite guard can say which term diverged.
    if not hasattr(strategy, "loss_terms"):
        strategy.loss_terms = {}
    strategy.loss_terms[name] = value
    strategy.loss = strategy.loss + weight * value
