"""Decoder distillation: the student renders each past z as the teacher did (an option beyond the papers)."""

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch.distributions import Bernoulli

from ..validation import check_non_negative_float
from .posterior_consistency import add_loss_term

__all__ = ["DecoderDistillationPlugin"]


class DecoderDistillationPlugin(SupervisedPlugin):
    """Add ``weight * -log p_student(x~ | z)`` for each replayed x~ and the prior z that generated it.

    Callbacks:
        ``before_backward``: for the replayed rows of the minibatch
        (``strategy.replay_batch``, filled by :class:`TeacherReplayPlugin`;
        nothing happens while there is no teacher), decode the *generating*
        latent z = [z_c, z_d] with the student and score the teacher's image
        x~ under the student's Bernoulli decoder, in nats per image.

    Why: the papers' objective fits the student's decoder to x~ only through
    the student's own posterior z ~ q(z|x~). Nothing then ties a prior z_c with
    an old z_d to that distribution: the student can keep class identity in
    z_c, so that a row of generated samples with z_d fixed mixes
    distributions (measured on split FashionMNIST, README). This term is the
    generator-side counterpart of the consistency KL: z -> x~ must stay what
    the teacher made it. It is not in LGM or CCL-GM; weight 0 (the
    strategy's default) leaves the papers' method unchanged.

    Args:
        weight: multiplier of the term (0 switches it off).
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = check_non_negative_float(weight, "weight")

    def before_backward(self, strategy, **kwargs):
        replay = getattr(strategy, "replay_batch", None)
        if replay is None or self.weight == 0:
            return
        model = strategy.model
        images = strategy.mb_x[replay.num_real:]
        # The student's z_d has grown since the teacher generated: pad the teacher's one-hot code.
        z_discrete = F.pad(replay.z_discrete, (0, model.discrete_dim - replay.z_discrete.shape[1]))
        logits = model.decode(replay.z_continuous, z_discrete)
        # Grey pixels are not binary: the Bernoulli support check is off (as in the joint bound).
        nll = -Bernoulli(logits=logits, validate_args=False).log_prob(images).flatten(1).sum(-1).mean()
        add_loss_term(strategy, "decoder_distillation", self.weight, nll)
