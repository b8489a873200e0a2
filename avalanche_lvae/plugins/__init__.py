"""The three behaviours of the lifelong strategy, as Avalanche ``SupervisedPlugin``s."""

from .posterior_consistency import PosteriorConsistencyPlugin
from .teacher_replay import ReplayBatch, TeacherReplayPlugin
from .teacher_swap import TeacherSwapPlugin

__all__ = ["TeacherSwapPlugin", "TeacherReplayPlugin", "PosteriorConsistencyPlugin", "ReplayBatch"]
