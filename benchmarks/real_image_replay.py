"""Real-image replay: the teacher's replay with its generated images replaced by stored training images.

An upper bound for the leaderboard (``lvae_large_real_replay_pmnist``), not a method of the library: it keeps
every past experience's training images, which the lifelong VAE exists to avoid. Everything else is
:class:`~avalanche_lvae.plugins.TeacherReplayPlugin`'s: equal shares per past experience, the teacher's soft
labels and posteriors q_teacher(z|x) on the replayed images for the distillation and consistency terms, the same
loss weights. The gap between this entry and the one it replaces the generator of is what the generator costs.
"""

import torch

from avalanche_lvae import LifelongVAE
from avalanche_lvae.plugins import TeacherReplayPlugin
from avalanche_lvae.streams import experience_tensors


class RealImageReplayPlugin(TeacherReplayPlugin):
    """:class:`TeacherReplayPlugin` replaying uniformly drawn training images of each past experience.

    Callbacks: the parent's, and ``after_training_exp``: keep the experience's
    training images, the pool the next experiences replay from.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.label_source != "posterior" or self.temperature != 1.0:
            raise ValueError("RealImageReplayPlugin replays images with no generating latent: it needs "
                             'label_source="posterior" and temperature=1.')
        self.past_images = []

    @classmethod
    def replacing(cls, strategy) -> "RealImageReplayPlugin":
        """Swap the strategy's :class:`TeacherReplayPlugin` for one with its settings that replays real images."""
        [index] = [i for i, p in enumerate(strategy.plugins) if type(p) is TeacherReplayPlugin]
        generated = strategy.plugins[index]
        strategy.plugins[index] = cls(
            replay_size=generated.replay_size, soft_labels=generated.soft_labels,
            label_source=generated.label_source, mixing=generated.mixing, temperature=generated.temperature,
            distillation_temperature=generated.distillation_temperature)
        return strategy.plugins[index]

    def after_training_exp(self, strategy, **kwargs):
        self.past_images.append(experience_tensors(strategy.experience)[0].to(strategy.device))

    def _draw(self, teacher, replay_size: int, past: int):
        if len(self.past_images) != past:
            raise ValueError(f"RealImageReplayPlugin holds {len(self.past_images)} experiences' images but the "
                             f"teacher replays {past}: train each experience with one train() call.")
        # The parent's contiguous equal shares (LifelongVAE.sample_latent), each a uniform draw (with
        # replacement) from its experience. The shares are computed on the host: no device sync for the counts.
        components = LifelongVAE.equal_share_components(replay_size, past)
        counts = torch.bincount(components, minlength=past).tolist()
        components = components.to(teacher.temperature.device)
        replay_x = torch.cat([images[torch.randint(len(images), (count,), device=images.device)]
                              for images, count in zip(self.past_images, counts)])
        return replay_x, replay_x, components, None, None
