"""Anchor the current experience's real data on the newest z_d value (an option beyond the papers)."""

import torch
from avalanche.core import SupervisedPlugin
from torch.distributions import Categorical

from ..validation import check_non_negative_float
from .posterior_consistency import add_loss_term, real_rows, student_output

__all__ = ["ComponentAnchorPlugin"]


class ComponentAnchorPlugin(SupervisedPlugin):
    """Add ``weight * -log q_student(z_d = J-1 | x)`` on the real rows of each minibatch.

    Callbacks:
        ``before_backward``: the newest value of z_d (index ``discrete_dim - 1``,
        added by :class:`TeacherSwapPlugin` for this experience) is the
        current distribution's code, so the real images are pulled onto it
        with a cross-entropy; replayed rows are left to the consistency KL.

    Why: replay fixes z_d per past distribution, but nothing in the papers'
    objective sends the *new* data to the new value -- the uniform prior on
    z_d is indifferent -- so the decoder may never see that value and a
    generated row with it fixed shows old data. Not in LGM or CCL-GM;
    weight 0 (the strategy's default) leaves the papers' method unchanged.

    Args:
        weight: multiplier of the cross-entropy (0 switches it off).
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = check_non_negative_float(weight, "weight")

    def before_backward(self, strategy, **kwargs):
        if self.weight == 0:
            return
        logits = student_output(strategy).discrete_logits[real_rows(strategy)]
        newest = torch.full((logits.shape[0],), logits.shape[1] - 1, dtype=torch.long, device=logits.device)
        add_loss_term(strategy, "component_anchor", self.weight, -Categorical(logits=logits).log_prob(newest).mean())
