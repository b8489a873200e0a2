"""The strategy zoo of the example scripts and the metrics each strategy is evaluated with.

=========== ===================================================================
lvae        ``LifelongVAEStrategy`` over ``LifelongVAE(discrete_dim=1)`` (z_d grows)
naive       ``LVAENaive`` over ``LifelongVAE(discrete_dim=n_experiences)`` (vae-cl)
ewc         ``naive`` + Avalanche's ``EWCPlugin(ewc_lambda, mode="separate")``
cumulative  ``LVAECumulative`` over ``LifelongVAE(discrete_dim=n_experiences)``
gr          Avalanche's ``GenerativeReplay`` over ``SimpleMLP``
lwf         Avalanche's ``LwF`` over ``SimpleMLP``
si          Avalanche's ``SynapticIntelligence`` over ``SimpleMLP``
=========== ===================================================================

``SimpleMLP`` is ``SimpleMLP(num_classes=10, input_size=784, hidden_size=512,
hidden_layers=2)`` (Avalanche's default dropout 0.5) trained with
``CrossEntropyLoss``; every strategy uses Adam with ``--lr``. ``gr`` uses the
generator ``GenerativeReplay`` builds by default (``MlpVAE``, nhid=2), built
here only to drop its InteractiveLogger; note that Avalanche's ``MlpVAE``
decoder maps its sigmoid through ``Normalize(0.1307, 0.3081)``, i.e. it was
written for normalised MNIST, but its output range [-0.42, 2.82] covers the
[0, 1] pixels of our streams, so it trains and replays fine.

Every strategy is evaluated with Avalanche's ``accuracy_metrics`` and
``forgetting_metrics``. The four LifelongVAE strategies (:data:`GENERATIVE`)
also get the package's generative metrics: negative test ELBO, Frechet
distance (unless ``--no-frechet``), sample / reconstruction grids, and for
``lvae`` the z_d consistency between teacher and student. The ``SimpleMLP``
strategies cannot get them: those metrics raise ``ValueError`` on a model
that cannot encode or generate.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from avalanche.training import VAETraining

try:  # imported as a package module (examples._strategies)
    from ._cli import GENERATIVE, STRATEGIES
except ImportError:  # examples/ is on sys.path
    from _cli import GENERATIVE, STRATEGIES


def evaluator(name: str, args, reference=None, tb_dir: Optional[str] = None, n_classes: int = 10):
    """The ``EvaluationPlugin`` of strategy ``name``.

    ``reference`` is the reference classifier of the Frechet distance and,
    for ``lvae``, of the sample grid's row purity (None skips both). With ``--plots DIR`` the sample and reconstruction
    grids are also saved as PNG in ``DIR/<name>/``.
    """
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    metrics = [accuracy_metrics(experience=True, stream=True), forgetting_metrics(experience=True, stream=True)]
    if name in GENERATIVE:
        from avalanche_lvae.metrics import (
            component_purity_metrics,
            consistency_metrics,
            frechet_distance_metrics,
            generated_samples_metrics,
            neg_elbo_metrics,
        )

        metrics.append(neg_elbo_metrics())
        if reference is not None:
            metrics.append(frechet_distance_metrics(reference, n_samples=args.fd_samples,
                                                    batch_size=min(1000, args.fd_samples)))
        save_dir = None if args.plots is None else os.path.join(args.plots, name)
        metrics.append(generated_samples_metrics(save_dir=save_dir))
        if name == "lvae":  # the only strategy with a teacher, and whose z_d value j is experience j
            metrics.append(consistency_metrics())
            if reference is not None:
                metrics.append(component_purity_metrics(reference, num_classes=n_classes))
    loggers = []
    if tb_dir is not None:
        from avalanche.logging import TensorboardLogger

        loggers.append(TensorboardLogger(tb_dir))
    return EvaluationPlugin(*metrics, loggers=loggers)


class _GeneratorTraining(VAETraining):
    """Avalanche's ``VAETraining``, dropping a last training minibatch of exactly one image.

    Avalanche's ``MlpVAE`` (the ``gr`` generator) has BatchNorm layers, which
    cannot train on one image (``LVAETemplateMixin`` does the same for the
    LifelongVAE strategies). A module-level class, so that checkpoints pickle
    it by reference.
    """

    def make_train_dataloader(self, *args, drop_last=False, **kwargs):
        data = self.adapted_dataset
        if not drop_last and data is not None and len(data) > 1 and len(data) % self.train_mb_size == 1:
            drop_last = True
        super().make_train_dataloader(*args, drop_last=drop_last, **kwargs)


def _quiet_generator_strategy(args, device):
    """The generator Avalanche's ``GenerativeReplay`` builds by default, without its InteractiveLogger.

    Same model (``MlpVAE((1, 28, 28), nhid=2)``), optimizer (Adam, lr 0.01,
    weight decay 1e-4), loss (``VAE_loss``), plugin and minibatch sizes as
    ``GenerativeReplay.__init__`` with ``generator_strategy=None`` (but a
    last minibatch of one image is dropped, see :class:`_GeneratorTraining`).
    """
    from avalanche.models import MlpVAE, VAE_loss
    from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin

    generator = MlpVAE((1, 28, 28), nhid=2, device=device)
    optimizer = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=0.01, weight_decay=1e-4)
    return _GeneratorTraining(model=generator, optimizer=optimizer, criterion=VAE_loss, train_mb_size=args.batch_size,
                       train_epochs=args.epochs, eval_mb_size=args.batch_size, device=device,
                       plugins=[GenerativeReplayPlugin()], evaluator=EvaluationPlugin(loggers=[]))


def make_strategy(name: str, args, n_classes: int, reference=None, tb_dir: Optional[str] = None,
                  **lvae_overrides):
    """Build strategy ``name`` (model seeded with ``args.seed``); returns ``(strategy, is_generative)``.

    ``lvae_overrides`` replace ``LifelongVAEStrategy`` arguments of ``lvae``
    (e.g. ``info_weight=0``, ``criterion=JointBoundLoss(100)``; the ablation's variants).

    ``RNGManager.set_random_seeds(seed)`` is called before each model is
    built, so a strategy gives the same numbers whether it runs alone or
    after others.
    """
    from avalanche.models import SimpleMLP
    from avalanche.training import GenerativeReplay, LwF, SynapticIntelligence
    from avalanche.training.determinism.rng_manager import RNGManager
    from avalanche.training.plugins import EWCPlugin

    from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAECumulative, LVAENaive
    from avalanche_lvae.presets import PAPER_MODEL

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {','.join(STRATEGIES)}")
    if lvae_overrides and name != "lvae":
        raise ValueError(f"lvae_overrides apply to lvae only, got them for {name!r}")
    RNGManager.set_random_seeds(args.seed)
    device = torch.device(args.device)
    common = dict(train_mb_size=args.batch_size, train_epochs=args.epochs, eval_mb_size=args.batch_size,
                  device=device, evaluator=evaluator(name, args, reference, tb_dir, n_classes))
    if name in GENERATIVE:
        # Replay labelled at the generating z needs the papers' classifier on z.
        classifier = PAPER_MODEL if getattr(args, "replay_labels", None) == "prior" else {}
        model = LifelongVAE(input_shape=(1, 28, 28), num_classes=n_classes, arch=args.arch,
                            continuous_dim=args.continuous_dim,
                            discrete_dim=1 if name == "lvae" else args.n_experiences, **classifier)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        common["criterion"] = JointBoundLoss(classification_weight=args.classification_weight)
        if name == "lvae":
            options = dict(continuous_consistency_weight=args.continuous_consistency,
                           replay_label_source=args.replay_labels, replay_mixing=args.replay_mixing,
                           replay_temperature=args.replay_temperature,
                           decoder_distillation_weight=args.decoder_distillation,
                           component_anchor_weight=args.component_anchor,
                           aggregate_posterior_weight=args.aggregate_posterior, info_weight=args.info_weight,
                           component_prior=args.component_prior)
            # Overrides may also replace a common argument (e.g. ``criterion``).
            return LifelongVAEStrategy(model=model, optimizer=optimizer, **{**common, **options, **lvae_overrides}), True
        if name == "cumulative":
            return LVAECumulative(model=model, optimizer=optimizer, **common), True
        plugins = [EWCPlugin(ewc_lambda=args.ewc_lambda, mode="separate")] if name == "ewc" else None
        return LVAENaive(model=model, optimizer=optimizer, plugins=plugins, **common), True

    model = SimpleMLP(num_classes=n_classes, input_size=28 * 28, hidden_size=512, hidden_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = torch.nn.CrossEntropyLoss()
    if name == "gr":
        return GenerativeReplay(model=model, optimizer=optimizer, criterion=criterion,
                                generator_strategy=_quiet_generator_strategy(args, device), **common), False
    if name == "lwf":
        return LwF(model=model, optimizer=optimizer, criterion=criterion, alpha=args.lwf_alpha,
                   temperature=args.lwf_temperature, **common), False
    return SynapticIntelligence(model=model, optimizer=optimizer, criterion=criterion,
                                si_lambda=args.si_lambda, eps=args.si_eps, **common), False
