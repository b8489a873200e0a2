"""The consistency regulariser between student and teacher posteriors on replay (LGM Eq. 10, 11)."""

from avalanche.core import SupervisedPlugin
from torch.distributions import Normal

from ..losses import consistency_kl, continuous_consistency_kl
from ..validation import check_bool, check_non_negative_float
from .shared import add_loss_term, replayed_row_weights, student_output

__all__ = ["PosteriorConsistencyPlugin"]


class PosteriorConsistencyPlugin(SupervisedPlugin, supports_distributed=True):
    """Add ``consistency_weight * KL[q_student(z_d|x~) || q_teacher(z_d|x~)]`` on the replayed rows.

    Callbacks:
        ``before_backward``: the loss of the minibatch already holds the joint
        bound; this adds the consistency KL of LGM Eq. 10 on the replayed rows
        (``strategy.replay_batch``, filled by :class:`TeacherReplayPlugin`;
        skipped while there is no teacher), which distils the teacher's
        discrete posterior into the student, and optionally its Gaussian form
        on z_c (Eq. 11). The terms are recorded in ``strategy.loss_terms`` for
        the non-finite guard.

    Row weights: Eq. 10 is one objective per instance, the consistency term
    belonging to the instances drawn from the teacher. So each replayed row
    carries the weight it has in the minibatch's ELBO
    (:func:`~avalanche_lvae.plugins.shared.replayed_row_weights`): 1/B with
    batch composition (the sum over replayed rows divided by all B rows), and
    (1 - pi)/R with loss weights. The term is not a mean over the replayed
    rows alone, which would weigh it more than the ELBO of the same rows.

    Distributed (``supports_distributed``): the terms are per-row means on
    the rank's shard, so the averaged gradient is the single-process one over
    the union of the shards.

    Args:
        consistency_weight: weight of the consistency KL (0 switches it off).
        reverse_kl: KL[student || teacher] (default) or the forward KL.
        continuous_consistency_weight: weight of the Gaussian consistency
            KL[q_student(z_c|x~) || q_teacher(z_c|x~)] (LGM Eq. 11, Lemma 1).
            Eq. 10 regularises z_d only, hence the default 0; a positive value
            also distils the teacher's continuous posterior, which the
            classifier p(y|z) reads.
    """

    def __init__(self, consistency_weight: float = 1.0, reverse_kl: bool = True,
                 continuous_consistency_weight: float = 0.0):
        super().__init__()
        self.consistency_weight = check_non_negative_float(consistency_weight, "consistency_weight")
        self.reverse_kl = check_bool(reverse_kl, "reverse_kl")
        self.continuous_consistency_weight = check_non_negative_float(
            continuous_consistency_weight, "continuous_consistency_weight"
        )

    def before_backward(self, strategy, **kwargs):
        replay = getattr(strategy, "replay_batch", None)
        if replay is None or (self.consistency_weight == 0 and self.continuous_consistency_weight == 0):
            return
        output, rows = student_output(strategy), slice(replay.num_real, None)
        # The ELBO's weight of each replayed row (LGM Eq. 10: the term is part of that row's objective).
        weights = replayed_row_weights(strategy)
        if self.consistency_weight > 0:
            kl = consistency_kl(output.discrete_logits[rows], replay.teacher_discrete_logits, reverse=self.reverse_kl)
            add_loss_term(strategy, "consistency", self.consistency_weight, (weights * kl).sum())
        if self.continuous_consistency_weight > 0:
            student = Normal(output.continuous_loc[rows], output.continuous_scale[rows])
            teacher = Normal(replay.teacher_continuous_loc, replay.teacher_continuous_scale)
            kl = continuous_consistency_kl(student, teacher, reverse=self.reverse_kl)
            add_loss_term(strategy, "continuous_consistency", self.continuous_consistency_weight, (weights * kl).sum())
