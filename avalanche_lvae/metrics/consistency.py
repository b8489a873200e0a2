"""Posterior consistency between student and teacher, as a plugin metric (docs/method.md).

The authors also report how often the student still assigns a past
distribution's images to the same discrete component as the teacher did:
the fraction of test images x with argmax q_teacher(z_d|x) == argmax q_student(z_d|x).
The consistency regulariser (LGM Eq. 10) is what keeps this fraction high.
"""

import warnings
from typing import List

from avalanche.evaluation import GenericPluginMetric
from avalanche.evaluation.metrics.mean import Mean

from .utils import evaluation_mode, require_lifelong_vae, trained_experience_index

__all__ = ["ZdConsistencyPluginMetric", "consistency_metrics"]


class ZdConsistencyPluginMetric(GenericPluginMetric[float, Mean]):
    """Fraction of test images whose most likely z_d is the same under teacher and student.

    After training experience k the strategy's teacher is the student as it was
    after experience k-1 (``strategy.teacher``, set by ``TeacherSwapPlugin``).
    The score is computed on each evaluated experience the teacher was trained
    on (index < k); the paper's number is the one of the previous task, Exp k-1.
    Experiences the teacher never saw, and evaluations without a teacher (the
    first experience), emit nothing. Emitted per experience as
    ``ZdConsistency_Exp/eval_phase/<stream>/Task<t>/Exp<e>``.

    Only ``argmax`` is compared, so the student's extra z_d value (grown for
    experience k) counts as a disagreement when it wins.

    Raises:
        ValueError: the strategy keeps no teacher attribute (not a strategy of
            this package) or its model is not a ``LifelongVAE``. A strategy whose
            teacher stays None (``LVAENaive``) gets one warning and no values.
    """

    def __init__(self):
        super().__init__(Mean(), reset_at="experience", emit_at="experience", mode="eval")
        self._warned = False

    def before_eval(self, strategy):
        if not hasattr(strategy, "teacher"):
            raise ValueError(
                f"{self} needs strategy.teacher (the frozen previous student), which {type(strategy).__name__} "
                "does not keep; use it with avalanche_lvae.LifelongVAEStrategy."
            )
        require_lifelong_vae(strategy.model, str(self))
        if strategy.teacher is None and trained_experience_index(strategy) >= 1 and not self._warned:
            warnings.warn(f"{self}: {type(strategy).__name__} keeps no teacher, so no consistency is computed.")
            self._warned = True
        return super().before_eval(strategy)

    def _active(self, strategy) -> bool:
        return (strategy.teacher is not None
                and strategy.experience.current_experience < trained_experience_index(strategy))

    def update(self, strategy):
        if not self._active(strategy):
            return
        teacher, student = strategy.teacher, strategy.model
        with evaluation_mode(teacher, student):
            # encode() returns (loc, scale, discrete_logits); argmax of the logits
            # is the argmax of q(z_d|x).
            agree = teacher.encode(strategy.mb_x)[2].argmax(-1) == student.encode(strategy.mb_x)[2].argmax(-1)
        self._metric.update(agree.float().mean(), weight=agree.numel())

    def after_eval_exp(self, strategy):
        if self._metric.weight == 0:
            return None
        return super().after_eval_exp(strategy)

    def __str__(self):
        return "ZdConsistency_Exp"


def consistency_metrics() -> List[ZdConsistencyPluginMetric]:
    """The z_d consistency score (see :class:`ZdConsistencyPluginMetric`) for an ``EvaluationPlugin``."""
    return [ZdConsistencyPluginMetric()]
