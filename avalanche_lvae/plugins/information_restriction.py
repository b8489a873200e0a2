"""The information-restricting regulariser L_I (LGM Eq. 9, the lambda term of Eq. 10)."""

from typing import Optional

from avalanche.core import SupervisedPlugin

from ..losses import information_restriction
from ..validation import check_non_negative_float, check_positive_int
from .shared import add_loss_term

__all__ = ["InformationRestrictionPlugin"]


class InformationRestrictionPlugin(SupervisedPlugin, supports_distributed=True):
    """Add ``weight * L_I`` computed on fresh prior samples of the student.

    Callbacks:
        ``before_backward``: draw ``samples`` latents z = [z_c, z_d] from the
        student's prior, decode them, re-encode the images and add lambda * L_I
        (:func:`~avalanche_lvae.losses.information_restriction`) to the loss,
        recorded as ``strategy.loss_terms["information"]``. The decoder
        descends L_I -- z_c must not carry what tells the distributions apart,
        so the decoder has to read it from z_d (LGM Sec. 4.4) -- while the
        encoder, the variational estimator, ascends it (gradient reversal).
        This extra pass does not update BatchNorm running statistics.

    Distributed (``supports_distributed``): each rank draws its own prior
    samples from its rank-dependent random stream, so the averaged gradient is
    that of ``world_size`` times as many samples.

    Args:
        weight: lambda of LGM Eq. 10 (paper: 0.01; 0 switches it off).
        samples: prior samples per iteration; None uses ``train_mb_size // 4``
            (at least 1) to keep its cost small.
    """

    def __init__(self, weight: float = 0.01, samples: Optional[int] = None):
        super().__init__()
        self.weight = check_non_negative_float(weight, "weight")
        self.samples = None if samples is None else check_positive_int(samples, "samples")

    def before_backward(self, strategy, **kwargs):
        if self.weight == 0:
            return
        samples = self.samples or max(1, strategy.train_mb_size // 4)
        add_loss_term(strategy, "information", self.weight, information_restriction(strategy.model, samples))
