"""Generative metrics: Frechet distance, (IW-)ELBO, image grids, reference cache, Avalanche integration."""

import warnings

import numpy as np
import pytest
import torch
from avalanche.evaluation.metric_results import TensorImage
from avalanche.logging import TensorboardLogger
from avalanche.models import SimpleMLP
from avalanche.training import Naive
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, EWCPlugin
from PIL import Image
from scipy import linalg

from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAENaive
from avalanche_lvae.data import load_tensors
from avalanche_lvae.losses import negative_joint_bound
from avalanche_lvae.metrics import (
    ExperienceNegELBO,
    component_purity,
    component_purity_metrics,
    GeneratedSamplesPluginMetric,
    consistency_metrics,
    frechet_distance,
    frechet_distance_metrics,
    generated_samples_metrics,
    importance_weighted_bound,
    neg_elbo_metrics,
    negative_elbo,
    reference,
    reference_classifier,
)
from avalanche_lvae.streams import experience_tensors, permuted_mnist

HIDDEN = 32
PAD = 2  # make_grid's padding


@pytest.fixture(scope="module")
def tiny_stream(data_root):
    return permuted_mnist(n_experiences=2, dataset_root=data_root, max_train_per_experience=256,
                          max_test_per_experience=128)


@pytest.fixture(scope="module")
def mnist_batch(data_root):
    return load_tensors("MNIST", False, data_root)[0][:128].clone()


@pytest.fixture(scope="module")
def trained_model(data_root):
    """A small LifelongVAE trained briefly on MNIST, so that q(z|x) is informative."""
    torch.manual_seed(0)
    x = load_tensors("MNIST", True, data_root)[0][:1024]
    model = LifelongVAE(hidden_dim=64, discrete_dim=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(3):
        for xb in x.split(64):
            loss = negative_joint_bound(model(xb), xb).negative_elbo.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_reference(tiny_stream, tmp_path_factory):
    return reference_classifier("tiny_pmnist", tiny_stream.train_stream, tiny_stream.test_stream,
                                cache_dir=tmp_path_factory.mktemp("cache"), epochs=8)


# ----------------------------------------------------------------------------- Frechet distance
def _eq19(a: np.ndarray, b: np.ndarray) -> float:
    """LGM Eq. 19 computed independently: Tr (S_a S_b)^(1/2) = Tr (S_a^(1/2) S_b S_a^(1/2))^(1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = linalg.sqrtm(s_a).real
    eig = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(eig.clip(0)).sum())


def test_frechet_distance_self_shift_and_formula():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 8, generator=gen) @ torch.randn(8, 8, generator=gen)
    assert abs(frechet_distance(a, a)) < 1e-6
    distances = [frechet_distance(a, a + shift) for shift in (0.5, 1.0, 2.0)]
    # A shift by s in all 8 dimensions adds exactly 8 s^2 (the covariance is unchanged).
    assert distances == pytest.approx([8 * 0.25, 8.0, 32.0], rel=1e-5)
    b = torch.randn(1500, 8, generator=gen) * 1.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(_eq19(a.double().numpy(), b.double().numpy()), rel=1e-6)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :4])


# ----------------------------------------------------------------------------- ELBO / IWAE
def test_elbo_metric_equals_the_loss_elbo_term(trained_model, mnist_batch):
    model, x = trained_model, mnist_batch
    model.train()  # the metric switches to eval mode and back
    torch.manual_seed(123)
    metric_values = negative_elbo(model, x)
    assert model.training
    model.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        expected = negative_joint_bound(model(x, sample=True), x).negative_elbo
    torch.testing.assert_close(metric_values, expected)
    # The plugin metric averages the same per-sample values.
    plugin = ExperienceNegELBO()
    torch.manual_seed(123)
    plugin.update(type("S", (), {"model": model, "mb_x": x})())
    assert plugin.result() == pytest.approx(float(expected.mean()), rel=1e-6)
    assert str(plugin) == "NegELBO_Exp" and str(ExperienceNegELBO(5)) == "NegIWELBO5_Exp"


def test_importance_weighted_bound_is_tighter_and_unbiased_at_k1(trained_model, mnist_batch):
    model, x = trained_model, mnist_batch
    torch.manual_seed(0)
    elbo = torch.stack([negative_elbo(model, x) for _ in range(20)]).mean()
    iw5 = negative_elbo(model, x, importance_samples=5).mean()
    iw50 = negative_elbo(model, x, importance_samples=50).mean()
    # -L_K decreases with K and lies below -ELBO (on average over the batch).
    assert iw50 < iw5 < elbo
    # The importance weight with K=1 is the sampled log-ratio: same expectation as
    # the analytic ELBO, checking every density of the IW bound.
    with torch.no_grad():
        sampled = -torch.stack([importance_weighted_bound(model, x, 1) for _ in range(50)]).mean()
    assert sampled == pytest.approx(float(elbo), abs=1.0)
    with pytest.raises(ValueError, match="importance_samples"):
        negative_elbo(model, x, importance_samples=0)


# ----------------------------------------------------------------------------- reference classifier
def test_reference_classifier_is_cached_and_reused(tiny_stream, tmp_path, monkeypatch):
    kwargs = dict(cache_dir=tmp_path, epochs=1)
    first = reference_classifier("tiny", tiny_stream.train_stream, tiny_stream.test_stream, **kwargs)
    path = tmp_path / "reference_tiny_seed0.pt"
    assert path.is_file() and first.metadata["cache_path"] == str(path)
    assert 0.0 <= first.metadata["test_accuracy"] <= 1.0
    assert len(first.metadata["test_accuracy_per_experience"]) == 2

    def no_training(*args, **kw):
        raise AssertionError("the cached reference classifier was retrained")

    monkeypatch.setattr(reference, "train_reference_classifier", no_training)
    mtime = path.stat().st_mtime_ns
    second = reference_classifier("tiny", tiny_stream.train_stream, **kwargs)
    assert path.stat().st_mtime_ns == mtime
    assert second.metadata["test_accuracy"] == first.metadata["test_accuracy"]
    for key, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key], value)
    # Another data size under the same name is refused rather than silently reused.
    with pytest.raises(ValueError, match="another benchmark_name"):
        reference_classifier("tiny", tiny_stream.train_stream[:1], **kwargs)
    with pytest.raises(AssertionError, match="retrained"):
        reference_classifier("tiny", tiny_stream.train_stream, retrain=True, **kwargs)
    with pytest.raises(ValueError, match="benchmark_name"):
        reference_classifier("../x", tiny_stream.train_stream, **kwargs)


def test_reference_classifier_learns_distribution_class_pairs(tiny_stream, tiny_reference, tmp_path):
    # Permuted MNIST's experiences share their labels; the reference must still
    # tell them apart, or an FD could not see a forgotten distribution.
    meta = tiny_reference.metadata
    assert meta["architecture"]["per_distribution"] and tiny_reference.head.out_features == 2 * 10
    features, identified = [], []
    with torch.no_grad():
        for index, experience in enumerate(tiny_stream.test_stream):
            x, y = experience_tensors(experience.dataset)
            pairs = tiny_reference(x).argmax(-1)
            identified.append(float((pairs // 10 == index).float().mean()))
            features.append(tiny_reference.features(x))
    assert min(identified) > 0.9, identified
    # One distribution alone is far from the pooled test set; two halves of the pool are close.
    pooled = torch.cat(features)
    halves = frechet_distance(torch.cat([f[::2] for f in features]), torch.cat([f[1::2] for f in features]))
    assert frechet_distance(features[-1], pooled) > 2 * halves
    # Class-only targets remain available, and labels outside num_classes are refused.
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        reference_classifier("tiny_bad", tiny_stream.train_stream, num_classes=5, cache_dir=tmp_path)


# ----------------------------------------------------------------------------- Avalanche integration
def _lvae_strategy(cls=LifelongVAEStrategy, discrete_dim=1, metrics=(), loggers=(), plugins=None):
    model = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=discrete_dim)
    return cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=64,
               train_epochs=1, eval_mb_size=128, plugins=plugins,
               evaluator=EvaluationPlugin(*metrics, loggers=list(loggers)))


def test_sample_grid_has_one_row_per_component(tiny_stream, tmp_path):
    metric = GeneratedSamplesPluginMetric(n_per_component=5, save_dir=tmp_path)
    strategy = _lvae_strategy(LVAENaive, discrete_dim=3, metrics=[metric])
    results = strategy.eval(tiny_stream.test_stream[:1])
    grid = results["GeneratedSamples/eval_phase/test_stream"]
    assert isinstance(grid, TensorImage)
    rows, cols = 3, 5
    assert tuple(grid.image.shape) == (3, rows * (28 + PAD) + PAD, cols * (28 + PAD) + PAD)
    assert 0.0 <= float(grid.image.min()) and float(grid.image.max()) <= 1.0
    png = tmp_path / "samples_test_before_training.png"
    with Image.open(png) as image:
        assert image.size == (cols * (28 + PAD) + PAD, rows * (28 + PAD) + PAD)


def test_metrics_in_evaluation_plugin_with_lifelong_strategy(tiny_stream, tiny_reference, tmp_path):
    RNGManager.set_random_seeds(0)
    logger = TensorboardLogger(tmp_path / "tb")
    metrics = [neg_elbo_metrics(), neg_elbo_metrics(experience=False, importance_samples=4),
               frechet_distance_metrics(tiny_reference, n_samples=256, batch_size=100),
               generated_samples_metrics(n_per_component=4, save_dir=tmp_path / "png"), consistency_metrics(),
               component_purity_metrics(tiny_reference, num_classes=10, n_per_component=50)]
    strategy = _lvae_strategy(metrics=metrics, loggers=[logger])
    strategy.train(tiny_stream.train_stream[0])
    first = strategy.eval(tiny_stream.test_stream[:1])
    assert "ZdConsistency_Exp/eval_phase/test_stream/Task000/Exp000" not in first  # no teacher yet
    strategy.train(tiny_stream.train_stream[1])
    results = strategy.eval(tiny_stream.test_stream[:2])

    prefix = "eval_phase/test_stream/Task000"
    exp_elbos = [results[f"NegELBO_Exp/{prefix}/Exp{e:03d}"] for e in range(2)]
    assert all(100 < v < 1000 for v in exp_elbos)  # nats per MNIST image, barely trained
    # Equal-size experiences: the stream value is their mean (different samples of z,
    # hence the tolerance); the 4-sample IW bound is not above it by more than noise.
    assert results[f"NegELBO_Stream/{prefix}"] == pytest.approx(np.mean(exp_elbos), rel=0.05)
    assert results[f"NegIWELBO4_Stream/{prefix}"] < results[f"NegELBO_Stream/{prefix}"] + 2.0
    assert results[f"FrechetDistance_Stream/{prefix}"] > 0
    grid = results["GeneratedSamples/eval_phase/test_stream"].image
    assert grid.shape[1] == 2 * (28 + PAD) + PAD  # z_d grew to 2 components
    recon = results["Reconstructions/eval_phase/test_stream/Exp001"].image
    assert recon.shape[1:] == (2 * (28 + PAD) + PAD, 8 * (28 + PAD) + PAD)  # input row, reconstruction row
    assert 0.0 <= results[f"ZdConsistency_Exp/{prefix}/Exp000"] <= 1.0
    assert f"ZdConsistency_Exp/{prefix}/Exp001" not in results  # the teacher never saw experience 1
    purity = metrics[-1][0].per_component
    assert len(purity) == 2 and results[f"ComponentPurity_Stream/{prefix}"] == pytest.approx(sum(purity) / 2)
    assert (tmp_path / "png" / "samples_test_after_exp001.png").is_file()
    assert (tmp_path / "png" / "reconstructions_test_exp000_after_exp001.png").is_file()

    logger.writer.flush()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "GeneratedSamples/eval_phase/test_stream" in events.Tags()["images"]
    assert f"NegELBO_Stream/{prefix}" in events.Tags()["scalars"]


def test_switching_the_metrics_on_leaves_the_training_run_bit_identical(tiny_stream, tiny_reference, tmp_path):
    # Every metric that draws random numbers (the ELBO's z, the IW bound's K samples, the
    # Frechet distance's and the grid's prior samples, the purity's samples) draws them
    # from a fork of the RNG, so the trained weights do not depend on which metrics run --
    # here also during training (eval_every=1, after each epoch).
    def train(metrics):
        RNGManager.set_random_seeds(0)
        model = LifelongVAE(hidden_dim=HIDDEN)
        strategy = LifelongVAEStrategy(
            model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=64,
            train_epochs=2, eval_mb_size=128, eval_every=1, evaluator=EvaluationPlugin(*metrics, loggers=[]))
        for exp in tiny_stream.train_stream:
            strategy.train(exp, eval_streams=[tiny_stream.test_stream[:1]])
            strategy.eval(tiny_stream.test_stream)
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain = train([])
    measured = train([neg_elbo_metrics(), neg_elbo_metrics(experience=False, importance_samples=3),
                      frechet_distance_metrics(tiny_reference, n_samples=200, batch_size=100),
                      generated_samples_metrics(n_per_component=3, save_dir=tmp_path), consistency_metrics(),
                      component_purity_metrics(tiny_reference, num_classes=10, n_per_component=20)])
    assert plain.keys() == measured.keys()
    differing = [k for k in plain if not torch.equal(plain[k], measured[k])]
    assert not differing, differing


def test_metrics_with_naive_ewc_and_plain_naive(tiny_stream, tiny_reference):
    metrics = [neg_elbo_metrics(), frechet_distance_metrics(tiny_reference, n_samples=256),
               generated_samples_metrics(n_per_component=2), consistency_metrics()]
    strategy = _lvae_strategy(LVAENaive, discrete_dim=2, metrics=metrics,
                              plugins=[EWCPlugin(ewc_lambda=10.0, mode="separate")])
    for exp in tiny_stream.train_stream:
        strategy.train(exp)
    with pytest.warns(UserWarning, match="keeps no teacher"):
        results = strategy.eval(tiny_stream.test_stream)
    assert "NegELBO_Stream/eval_phase/test_stream/Task000" in results
    assert "FrechetDistance_Stream/eval_phase/test_stream/Task000" in results
    assert results["GeneratedSamples/eval_phase/test_stream"].image.shape[1] == 2 * (28 + PAD) + PAD
    assert not any(k.startswith("ZdConsistency") for k in results)

    # Avalanche's own Naive over a LifelongVAE (mb_output is then the LVAEOutput):
    # the ELBO metric does its own forward and does not read the strategy's loss.
    model = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2)
    naive = Naive(model=model, optimizer=torch.optim.Adam(model.parameters()), criterion=JointBoundLoss(),
                  eval_mb_size=128, evaluator=EvaluationPlugin(neg_elbo_metrics(), loggers=[]))
    results = naive.eval(tiny_stream.test_stream[:1])
    assert results["NegELBO_Exp/eval_phase/test_stream/Task000/Exp000"] > 100


class _BrightnessReference(torch.nn.Module):
    """Labels an image (experience 1, class 0) when its mean pixel is above 0.5, else (experience 0, class 0)."""

    def __init__(self, num_outputs=20):
        super().__init__()
        self.num_outputs = num_outputs

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.num_outputs)
        logits[:, min(10, self.num_outputs - 1)] = 10 * (x.flatten(1).mean(1) - 0.5)
        return logits


def test_component_purity_counts_the_rows_the_reference_assigns_to_their_distribution():
    model = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2)
    # A decoder whose row 0 is dark and row 1 bright: each row is its own distribution.
    model.decode = lambda z_c, z_d: (20 * z_d[:, 1] - 10)[:, None, None, None].expand(-1, 1, 28, 28)
    assert component_purity(model, _BrightnessReference(), num_classes=10, n_per_component=20) == [1.0, 1.0]
    # Swapped rows: every sample is assigned to the other distribution.
    model.decode = lambda z_c, z_d: (20 * z_d[:, 0] - 10)[:, None, None, None].expand(-1, 1, 28, 28)
    assert component_purity(model, _BrightnessReference(), num_classes=10, n_per_component=20) == [0.0, 0.0]
    with pytest.raises(ValueError, match="per_distribution=True"):
        component_purity(model, _BrightnessReference(num_outputs=10), num_classes=10)


@pytest.mark.parametrize("make_metrics", [
    lambda ref: component_purity_metrics(ref, num_classes=10),
    lambda ref: neg_elbo_metrics(),
    lambda ref: frechet_distance_metrics(ref, n_samples=256),
    lambda ref: generated_samples_metrics(),
])
def test_non_generative_model_raises_a_clear_error(tiny_stream, tiny_reference, make_metrics):
    model = SimpleMLP(num_classes=10, input_size=28 * 28, hidden_size=32, hidden_layers=1)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters()),
                     criterion=torch.nn.CrossEntropyLoss(), eval_mb_size=128,
                     evaluator=EvaluationPlugin(make_metrics(tiny_reference), loggers=[]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="LifelongVAE.*SimpleMLP"):
            strategy.eval(tiny_stream.test_stream[:1])
