"""What the plugins share: reading the student's output and adding weighted loss terms.

The loss-shaping plugins of :mod:`avalanche_lvae.plugins` run in
``before_backward`` on the minibatch the strategy has just forwarded. This
module holds what they share: the student's full
:class:`~avalanche_lvae.models.LVAEOutput` (:func:`student_output`), the
weight each replayed row has in the ELBO (:func:`replayed_row_weights`), and
how a term joins the loss (:func:`add_loss_term`).
"""

import torch

from ..models import LVAEOutput

__all__ = ["student_output", "replayed_row_weights", "real_row_weights", "add_loss_term"]


def student_output(strategy) -> LVAEOutput:
    """The student's full :class:`LVAEOutput` of the current minibatch, or a ``ValueError`` naming the fix."""
    # LVAETemplateMixin keeps the full output aside (mb_output is the class
    # logits); a plain Avalanche template over a LifelongVAE has it in mb_output.
    output = getattr(strategy, "lvae_output", None)
    output = strategy.mb_output if output is None else output
    if not isinstance(output, LVAEOutput):
        raise ValueError(
            "this plugin needs a LifelongVAE's output; attach it to a strategy training a "
            "LifelongVAE (LifelongVAEStrategy, LVAENaive, or Naive with criterion=JointBoundLoss())."
        )
    return output


def replayed_row_weights(strategy) -> torch.Tensor:
    """``[R]`` weights of the replayed rows in the minibatch's ELBO (needs ``strategy.replay_batch``).

    The criterion averages the joint bound over all rows (batch composition:
    1/B each, B = real + replayed rows) or weights it per row
    (``strategy.mb_sample_weights``, loss weights: (1 - pi)/R per replayed
    row). A per-row term on the replayed rows only (the consistency KL) uses
    the same weights, so that ``sum(weights * term)`` is that term's share of
    the objective.
    """
    return _row_weights(strategy, slice(strategy.replay_batch.num_real, None))


def real_row_weights(strategy) -> torch.Tensor:
    """``[num_real]`` weights of the real rows in the minibatch's ELBO (every row while there is no replay):
    1/B each with batch composition, pi/num_real with loss weights; as :func:`replayed_row_weights`."""
    replay = getattr(strategy, "replay_batch", None)
    return _row_weights(strategy, slice(None, None if replay is None else replay.num_real))


def _row_weights(strategy, rows: slice) -> torch.Tensor:
    output = student_output(strategy)
    weights = getattr(strategy, "mb_sample_weights", None)
    if weights is None:
        weights = output.class_logits.new_full((len(output),), 1.0 / len(output))
    return weights[rows]


def add_loss_term(strategy, name: str, weight: float, value) -> None:
    """Add ``weight * value`` to ``strategy.loss`` and record it in ``strategy.loss_terms[name]``."""
    # Recorded by name so the strategy's non-finite guard can say which term diverged.
    if not hasattr(strategy, "loss_terms"):
        strategy.loss_terms = {}
    strategy.loss_terms[name] = value
    strategy.loss = strategy.loss + weight * value
