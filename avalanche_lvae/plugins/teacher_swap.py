"""Teacher swap when a new distribution starts (LGM Sec. 4, App. 9.3)."""

import copy

from avalanche.core import SupervisedPlugin
from torch.nn.modules.batchnorm import _BatchNorm

from ..models import LifelongVAE
from ..validation import check_bool

__all__ = ["TeacherSwapPlugin"]


class TeacherSwapPlugin(SupervisedPlugin, supports_distributed=True):
    """Freeze the trained student into the teacher and start a new student from it.

    Callbacks:
        ``before_training_exp``: when the experience differs from the one the
        student trained on last (compared by stream name and experience
        index, so calling ``train`` again on the same experience -- epoch by
        epoch, early stopping -- continues it), call
        :meth:`start_new_distribution`. The first experience trains a plain
        student without a teacher. It runs before the first iteration of the
        experience and after the previous experience's evaluation, so the
        evaluated model is always the trained student.

    :meth:`start_new_distribution` is public so that a strategy that detects a
    new distribution inside an experience (task-free streams) can swap there.

    Published on the strategy: ``strategy.teacher`` (for
    :class:`TeacherReplayPlugin` and :class:`PosteriorConsistencyPlugin`) and
    ``strategy.past_distributions``, the number k of distributions the
    teacher has learned (pi = 1/(k+1) is the share of the current one).

    Distributed (``supports_distributed``): it runs outside the training
    epoch, on the random stream all ranks share, on a student that is
    bit-identical across ranks, so every rank swaps at the same boundary and
    grows z_d to the same weights (:mod:`avalanche_lvae.distributed`).

    Args:
        grow_discrete: add one z_d value per new distribution (the lifelong
            model); False keeps the size the model was built with.
    """

    def __init__(self, grow_discrete: bool = True):
        super().__init__()
        self.grow_discrete = check_bool(grow_discrete, "grow_discrete")
        self._experience = None  # (stream name, index) of the experience the student trains on

    def before_training_exp(self, strategy, **kwargs):
        check_lifelong_model(strategy, "TeacherSwapPlugin")  # fail at the first experience, not at the second
        experience = strategy.experience
        key = (getattr(getattr(experience, "origin_stream", None), "name", None), experience.current_experience)
        if self._experience is None:
            strategy.teacher = None  # the first distribution trains a plain student
            strategy.past_distributions = 0
        elif key != self._experience:
            self.start_new_distribution(strategy)
        self._experience = key

    def start_new_distribution(self, strategy) -> None:
        """Swap now: the student trained so far becomes the teacher of a new distribution.

        (1) deep-copy the student into ``strategy.teacher`` in eval mode with
        ``requires_grad=False`` -- the previous teacher is dropped, so exactly
        one exists; (2) grow the student's z_d by one value for the new
        distribution (``LifelongVAE.grow_discrete``, if ``grow_discrete``);
        (3) reset the student's BatchNorm running statistics and the
        optimizer's state (Adam's moments, App. 9.3), rebuilding the optimizer
        so that it holds the grown layers; (4) count the distribution in
        ``strategy.past_distributions``. Callable from any callback, e.g. when
        a boundary is detected in the middle of an experience
        (:class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin`).
        """
        student = strategy.model
        teacher = copy.deepcopy(student).eval()
        teacher.requires_grad_(False)
        strategy.teacher = teacher
        strategy.past_distributions = getattr(strategy, "past_distributions", 0) + 1
        if self.grow_discrete:
            student.grow_discrete(1)
        for module in student.modules():
            if isinstance(module, _BatchNorm):
                module.reset_running_stats()
        # The grown layers are new Parameters: Avalanche's make_optimizer maps
        # them by name; reset_optimizer_state clears Adam's moments.
        strategy.make_optimizer(reset_optimizer_state=True)


def check_lifelong_model(strategy, who: str) -> None:
    """Raise a ``ValueError`` unless ``strategy.model`` is a LifelongVAE (checked at the first experience)."""
    if not isinstance(strategy.model, LifelongVAE):
        raise ValueError(
            f"{who} needs a strategy training an avalanche_lvae.LifelongVAE (it grows z_d and "
            f"replays from the teacher), got a {type(strategy.model).__name__}."
        )
