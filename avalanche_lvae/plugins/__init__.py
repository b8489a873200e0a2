"""The behaviours of the lifelong strategy, as Avalanche ``SupervisedPlugin``s."""

from .aggregate_posterior import AggregatePosteriorPlugin
from .boundary_detection import BoundaryDetectionPlugin
from .component_anchor import ComponentAnchorPlugin
from .component_prior import ComponentPriorPlugin
from .decoder_distillation import DecoderDistillationPlugin
from .posterior_consistency import PosteriorConsistencyPlugin
from .teacher_replay import ReplayBatch, TeacherReplayPlugin
from .teacher_swap import TeacherSwapPlugin

__all__ = ["TeacherSwapPlugin", "TeacherReplayPlugin", "PosteriorConsistencyPlugin", "ReplayBatch", "DecoderDistillationPlugin",
           "ComponentAnchorPlugin", "AggregatePosteriorPlugin", "ComponentPriorPlugin", "BoundaryDetectionPlugin"]
