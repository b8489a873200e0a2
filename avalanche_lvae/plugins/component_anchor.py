"""Anchor the current distribution's real images on its own z_d value (beyond LGM and CCL-GM)."""

from avalanche.core import SupervisedPlugin

from ..validation import check_non_negative_float
from .shared import add_loss_term, real_row_weights, student_output

__all__ = ["ComponentAnchorPlugin"]


class ComponentAnchorPlugin(SupervisedPlugin, supports_distributed=True):
    """Add ``weight * -log q_student(z_d = k | x)`` on the real rows, k the current distribution's z_d value.

    Callbacks:
        ``before_backward``: the loss of the minibatch already holds the joint
        bound; this adds the cross-entropy between the student's discrete
        posterior on the real rows and the value k =
        ``strategy.past_distributions`` that
        :class:`~avalanche_lvae.plugins.TeacherSwapPlugin` (or
        :class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin`) grew for the
        current distribution. Each row carries its weight in the ELBO
        (:func:`~avalanche_lvae.plugins.shared.real_row_weights`), as the
        consistency KL does on the replayed rows. Recorded in
        ``strategy.loss_terms`` for the non-finite guard.

    Why: replay generates past distribution j with z_d fixed to j (LGM
    Sec. 4.3), and the consistency KL (Eq. 10) keeps the replayed rows on the
    teacher's values, but nothing in Eq. 10 sends the *new* data to the new
    value: the uniform prior on z_d is indifferent. Without it, a new
    distribution can settle on an old value, after which its own value
    decodes other distributions and it is hardly replayed at all, so its
    accuracy falls at every later boundary (10-task permuted MNIST,
    docs/results.md). The boundaries already say which distribution the real
    rows come from; the anchor uses that.

    A model without a value of its own for the current distribution
    (``grow_discrete=False`` and k >= ``discrete_dim``) has nothing to anchor:
    no term is added.

    Distributed (``supports_distributed``): a per-row weighted sum on the
    rank's shard, like the consistency KL.

    Args:
        weight: multiplier of the cross-entropy (0 switches it off).
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = check_non_negative_float(weight, "weight")

    def before_backward(self, strategy, **kwargs):
        if self.weight == 0:
            return
        current, output = strategy.past_distributions, student_output(strategy)
        if current >= output.discrete_logits.shape[1]:
            return
        weights = real_row_weights(strategy)
        cross_entropy = -output.discrete_logits[: len(weights)].log_softmax(-1)[:, current]
        add_loss_term(strategy, "component_anchor", self.weight, (weights * cross_entropy).sum())
