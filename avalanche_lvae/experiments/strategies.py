"""The strategies ``avalanche-lvae run`` compares, and the metrics each one is evaluated with.

=========== ===================================================================
lvae        ``LifelongVAEStrategy`` over ``LifelongVAE(discrete_dim=1)`` (z_d grows)
naive       ``LVAENaive`` over ``LifelongVAE(discrete_dim=n_experiences)`` (vae-cl)
ewc         ``naive`` + Avalanche's ``EWCPlugin(ewc_lambda, mode="separate")`` (:class:`GlobalBatchEWCPlugin`)
cumulative  ``LVAECumulative`` over ``LifelongVAE(discrete_dim=n_experiences)``
gr          Avalanche's ``GenerativeReplay`` over ``SimpleMLP``
lwf         Avalanche's ``LwF`` over ``SimpleMLP``
si          Avalanche's ``SynapticIntelligence`` over ``SimpleMLP``
=========== ===================================================================

``SimpleMLP`` is ``SimpleMLP(num_classes=10, input_size=784, hidden_size=512,
hidden_layers=2)`` (Avalanche's default dropout 0.5) trained with
``CrossEntropyLoss``; every strategy uses Adam with ``--lr``. The lifelong
model's settings come from the flags through :func:`lvae_settings` only: an
unset flag leaves the library's default in place. ``gr`` uses the
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
from typing import Optional, Tuple

import torch
from avalanche.distributed import DistributedHelper
from avalanche.training import VAETraining
from avalanche.training.plugins import EWCPlugin

from avalanche_lvae.presets import ONE_CLASS_PER_EXPERIENCE, PAPER_MODEL, PAPER_STRATEGY

__all__ = ["STRATEGIES", "DEFAULT_STRATEGIES", "GENERATIVE", "evaluator", "GeneratorTraining",
           "quiet_generator_strategy", "lvae_settings", "make_strategy", "GlobalBatchEWCPlugin", "PRESETS"]

STRATEGIES = ("lvae", "naive", "ewc", "gr", "lwf", "si", "cumulative")
DEFAULT_STRATEGIES = "lvae,naive,ewc,gr"
GENERATIVE = ("lvae", "naive", "ewc", "cumulative")  # strategies whose model has an ELBO and generates


def evaluator(name: str, args, reference=None, tb_dir: Optional[str] = None, n_classes: int = 10,
              plots_name: Optional[str] = None):
    """The ``EvaluationPlugin`` of strategy ``name``.

    ``reference`` is the reference classifier of the Frechet distance and,
    for ``lvae``, of the sample grid's row purity (None skips both). With ``--plots DIR`` the sample and reconstruction
    grids are also saved as PNG in ``DIR/<plots_name or name>/``.
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
        # Under torchrun only rank 0 writes grids (every rank computes the same ones).
        write = args.plots is not None and DistributedHelper.is_main_process
        save_dir = os.path.join(args.plots, plots_name or name) if write else None
        metrics.append(generated_samples_metrics(save_dir=save_dir))
        if name == "lvae":  # the only strategy with a teacher, and whose z_d value j is experience j
            metrics.append(consistency_metrics())
            if reference is not None:
                metrics.append(component_purity_metrics(reference, num_classes=n_classes))
    loggers = []
    if tb_dir is not None and DistributedHelper.is_main_process:  # Avalanche's loggers refuse other ranks
        from avalanche.logging import TensorboardLogger

        loggers.append(TensorboardLogger(tb_dir))
    return EvaluationPlugin(*metrics, loggers=loggers)


class GlobalBatchEWCPlugin(EWCPlugin, supports_distributed=True):
    """Avalanche's ``EWCPlugin``, computing the importances at the global minibatch size under ``torchrun``.

    ``EWCPlugin`` estimates the Fisher information as the mean over
    minibatches of ``train_mb_size`` of the squared gradient of the minibatch
    mean loss, so its scale depends on that size (``--ewc-lambda`` is tuned
    for ``--batch-size``). Under ``torchrun`` ``train_mb_size`` is the per-rank
    share; this plugin uses ``train_mb_size * world_size``, the global batch,
    so the penalty is the single-process one. Every rank computes the
    importances over the whole experience with the same replica and the
    same random stream (they run after the training epochs), so every rank
    adds the same penalty; in a single process it is ``EWCPlugin`` unchanged.
    """

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        return super().compute_importances(model, criterion, optimizer, dataset, device,
                                           batch_size * DistributedHelper.world_size, num_workers=num_workers)


class GeneratorTraining(VAETraining):
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


def quiet_generator_strategy(batch_size: int, epochs: int, device):
    """The generator Avalanche's ``GenerativeReplay`` builds by default, without its InteractiveLogger.

    Same model (``MlpVAE((1, 28, 28), nhid=2)``), optimizer (Adam, lr 0.01,
    weight decay 1e-4), loss (``VAE_loss``), plugin and minibatch sizes as
    ``GenerativeReplay.__init__`` with ``generator_strategy=None`` (but a
    last minibatch of one image is dropped, see :class:`GeneratorTraining`).
    """
    from avalanche.models import MlpVAE, VAE_loss
    from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin

    generator = MlpVAE((1, 28, 28), nhid=2, device=device)
    optimizer = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=0.01, weight_decay=1e-4)
    return GeneratorTraining(model=generator, optimizer=optimizer, criterion=VAE_loss, train_mb_size=batch_size,
                             train_epochs=epochs, eval_mb_size=batch_size, device=device,
                             plugins=[GenerativeReplayPlugin()], evaluator=EvaluationPlugin(loggers=[]))


#: ``--preset NAME``: the (LifelongVAE, LifelongVAEStrategy) keyword arguments the lifelong model starts from.
PRESETS = {"default": ({}, {}), "paper": (PAPER_MODEL, PAPER_STRATEGY),
           "one_class": ({}, ONE_CLASS_PER_EXPERIENCE)}
#: ``LifelongVAEStrategy`` argument of each lvae-only flag (the flag's namespace attribute).
_LVAE_STRATEGY_FLAGS = dict(classification_weight="classification_weight", consistency_weight="consistency_weight",
                            info_weight="info_weight",
                            continuous_consistency="continuous_consistency_weight",
                            replay_labels="replay_label_source", replay_mixing="replay_mixing",
                            replay_temperature="replay_temperature", component_prior="component_prior")


def lvae_settings(args) -> Tuple[dict, dict]:
    """``(model_kwargs, strategy_kwargs)`` of the lifelong model that the flags ``args`` set.

    The one place where flags become ``LifelongVAE`` / ``LifelongVAEStrategy``
    arguments. They start from ``--preset``: nothing (the library's
    defaults), the papers' equations or the settings for one class per
    experience (:mod:`avalanche_lvae.presets`); a flag
    left at None changes nothing. ``model_kwargs`` and the classification
    weight apply to every LifelongVAE strategy, the rest of
    ``strategy_kwargs`` to ``lvae`` only.
    """
    preset_model, preset_strategy = PRESETS[getattr(args, "preset", "default")]
    model_kwargs = dict(preset_model)
    model_kwargs.update({key: getattr(args, key) for key in ("arch", "continuous_dim")
                         if getattr(args, key) is not None})
    if args.replay_labels == "prior":  # replay labelled at the generating z needs the papers' classifier on z
        model_kwargs.update(PAPER_MODEL)
    strategy_kwargs = dict(preset_strategy)
    strategy_kwargs.update({argument: getattr(args, flag) for flag, argument in _LVAE_STRATEGY_FLAGS.items()
                            if getattr(args, flag) is not None})
    return model_kwargs, strategy_kwargs


def make_strategy(name: str, args, n_classes: int, reference=None, tb_dir: Optional[str] = None,
                  plots_name: Optional[str] = None):
    """Build strategy ``name`` (model seeded with ``args.seed``); returns ``(strategy, is_generative)``.

    ``RNGManager.set_random_seeds(seed)`` is called before each model is
    built, so a strategy gives the same numbers whether it runs alone or
    after others. Sample grids go to ``<args.plots>/<plots_name or name>/``.
    """
    from avalanche.models import SimpleMLP
    from avalanche.training import GenerativeReplay, LwF, SynapticIntelligence
    from avalanche.training.determinism.rng_manager import RNGManager

    from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAECumulative, LVAENaive

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {','.join(STRATEGIES)}")
    RNGManager.set_random_seeds(args.seed)
    device = torch.device(args.device)
    # --batch-size is the global minibatch: under torchrun each rank trains on its share (it divides,
    # see distributed_run) and evaluates the whole test set at the full size.
    common = dict(train_mb_size=args.batch_size // DistributedHelper.world_size, train_epochs=args.epochs,
                  eval_mb_size=args.batch_size, device=device,
                  evaluator=evaluator(name, args, reference, tb_dir, n_classes, plots_name))
    if name in GENERATIVE:
        model_kwargs, strategy_kwargs = lvae_settings(args)
        model = LifelongVAE(input_shape=(1, 28, 28), num_classes=n_classes,
                            discrete_dim=1 if name == "lvae" else args.n_experiences, **model_kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        if name == "lvae":
            return LifelongVAEStrategy(model=model, optimizer=optimizer, **common, **strategy_kwargs), True
        # The classification weight applies to every LifelongVAE strategy, lvae's default included.
        common["criterion"] = JointBoundLoss(classification_weight=strategy_kwargs.get(
            "classification_weight", LifelongVAEStrategy.DEFAULT_CLASSIFICATION_WEIGHT))
        if name == "cumulative":
            return LVAECumulative(model=model, optimizer=optimizer, **common), True
        plugins = [GlobalBatchEWCPlugin(ewc_lambda=args.ewc_lambda, mode="separate")] if name == "ewc" else None
        return LVAENaive(model=model, optimizer=optimizer, plugins=plugins, **common), True

    model = SimpleMLP(num_classes=n_classes, input_size=28 * 28, hidden_size=512, hidden_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = torch.nn.CrossEntropyLoss()
    if name == "gr":
        generator = quiet_generator_strategy(args.batch_size, args.epochs, device)
        return GenerativeReplay(model=model, optimizer=optimizer, criterion=criterion,
                                generator_strategy=generator, **common), False
    if name == "lwf":
        return LwF(model=model, optimizer=optimizer, criterion=criterion, alpha=args.lwf_alpha,
                   temperature=args.lwf_temperature, **common), False
    return SynapticIntelligence(model=model, optimizer=optimizer, criterion=criterion,
                                si_lambda=args.si_lambda, eps=args.si_eps, **common), False
