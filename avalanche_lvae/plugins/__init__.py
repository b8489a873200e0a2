"""The behaviours of the lifelong strategy, as Avalanche ``SupervisedPlugin``s.

Helpers the plugins share live in :mod:`avalanche_lvae.plugins.shared`.
"""

from .boundary_detection import BoundaryDetectionPlugin
from .component_anchor import ComponentAnchorPlugin
from .component_prior import ComponentPriorPlugin
from .information_restriction import InformationRestrictionPlugin
from .posterior_consistency import PosteriorConsistencyPlugin
from .teacher_replay import ReplayBatch, TeacherReplayPlugin
from .teacher_swap import TeacherSwapPlugin

__all__ = ["TeacherSwapPlugin", "TeacherReplayPlugin", "PosteriorConsistencyPlugin", "InformationRestrictionPlugin",
           "ReplayBatch", "ComponentPriorPlugin", "ComponentAnchorPlugin",
           "BoundaryDetectionPlugin"]
