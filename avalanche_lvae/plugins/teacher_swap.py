"""Teacher swap at every experience boundary (LGM Sec. 4, App. 9.3)."""

import copy

from avalanche.core import SupervisedPlugin
from torch.nn.modules.batchnorm import _BatchNorm

from ..models import LifelongVAE
from ..validation import check_bool

__all__ = ["TeacherSwapPlugin"]


class TeacherSwapPlugin(SupervisedPlugin):
    """Freeze the trained student into the teacher and start a new student from it.

    Callbacks:
        ``before_training_exp``: from the second training experience on,
        (1) deep-copy the student into ``strategy.teacher`` in eval mode with
        ``requires_grad=False`` -- the previous teacher is dropped, so exactly
        one exists; (2) grow the student's z_d by one value for the new
        distribution (``LifelongVAE.grow_discrete``); (3) reset the student's
        BatchNorm running statistics and Adam's moments (App. 9.3) by
        rebuilding the optimizer state. It runs before the first iteration of
        the experience and after the previous experience's evaluation, so the
        evaluated model is always the trained student. The swap itself is the
        public :meth:`start_new_distribution`.

    The teacher is published as ``strategy.teacher`` for
    :class:`TeacherReplayPlugin` and :class:`PosteriorConsistencyPlugin`.

    Args:
        grow_discrete: add one z_d value per new experience (the lifelong
            model); False keeps the size the model was built with.
    """

    def __init__(self, grow_discrete: bool = True):
        super().__init__()
        self.grow_discrete = check_bool(grow_discrete, "grow_discrete")

    def before_training_exp(self, strategy, **kwargs):
        check_lifelong_model(strategy, "TeacherSwapPlugin")
        if strategy.clock.train_exp_counter == 0:
            strategy.teacher = None  # the first experience trains a plain student
            return
        self.start_new_distribution(strategy)

    def start_new_distribution(self, strategy) -> None:
        """Swap now: the student becomes the teacher and a grown student continues from it.

        (1) deep-copy the student into ``strategy.teacher`` in eval mode with
        ``requires_grad=False`` (the previous teacher is dropped); (2) grow the
        student's z_d by one value if ``grow_discrete``; (3) reset its
        BatchNorm running statistics and the optimizer state (App. 9.3).
        Called at every given boundary, and by
        :class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin` when it
        detects one.
        """
        student = strategy.model
        teacher = copy.deepcopy(student).eval()
        teacher.requires_grad_(False)
        strategy.teacher = teacher
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
