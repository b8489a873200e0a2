"""ComponentAnchorPlugin: the current distribution's real rows are sent to its own z_d value, each row weighted as
in the ELBO; no term when the model has no value of its own for it."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from avalanche_lvae import LifelongVAE
from avalanche_lvae.plugins import ComponentAnchorPlugin
from avalanche_lvae.streams import permuted_mnist
from test_plugins import _student_with_replay
from test_strategy import HIDDEN, _strategy


@pytest.mark.parametrize("mixing", ["batch_composition", "loss_weights"])
def test_anchor_is_the_cross_entropy_to_the_newest_value_on_the_real_rows_weighted_as_the_elbo(mixing):
    strategy = _student_with_replay(num_real=12, replay_size=6, mixing=mixing)  # k = 2, student has 3 values
    ComponentAnchorPlugin(weight=3.0).before_backward(strategy)
    num_real, logits = strategy.replay_batch.num_real, strategy.lvae_output.discrete_logits
    cross_entropy = F.cross_entropy(logits[:num_real], torch.full((num_real,), 2), reduction="none")
    if mixing == "batch_composition":
        assert num_real == 4
        weights = torch.full((4,), 1 / 12)  # the plain mean over all B = 12 rows
    else:
        weights = torch.full((12,), (1 / 3) / 12)  # pi = 1/3 over the 12 real rows
        assert torch.allclose(strategy.mb_sample_weights[:num_real], weights)
    expected = (weights * cross_entropy).sum().item()
    assert strategy.loss_terms["component_anchor"].item() == pytest.approx(expected, rel=1e-5)
    assert strategy.loss.item() == pytest.approx(3.0 * expected, rel=1e-5)


def test_no_replay_weighs_every_row_and_a_model_without_an_own_value_gets_no_term():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2)
    x = torch.rand(5, 1, 28, 28)
    strategy = SimpleNamespace(model=model, lvae_output=model(x), past_distributions=0, replay_batch=None,
                               loss=torch.tensor(0.0))
    ComponentAnchorPlugin(weight=1.0).before_backward(strategy)
    expected = F.cross_entropy(strategy.lvae_output.discrete_logits, torch.zeros(5, dtype=torch.long))
    assert strategy.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # grow_discrete=False with k >= discrete_dim: the current distribution has no value to anchor on.
    strategy = SimpleNamespace(model=model, lvae_output=model(x), past_distributions=2, replay_batch=None,
                               loss=torch.tensor(0.0))
    ComponentAnchorPlugin(weight=1.0).before_backward(strategy)
    assert strategy.loss.item() == 0.0 and not getattr(strategy, "loss_terms", {})
    with pytest.raises(ValueError, match="weight"):
        ComponentAnchorPlugin(weight=-1.0)


def test_each_new_distribution_is_encoded_on_its_own_value(data_root):
    stream = permuted_mnist(n_experiences=3, dataset_root=data_root, max_train_per_experience=512,
                            max_test_per_experience=256)
    own_value_probability = {}
    for weight in (0.0, 100.0):
        torch.manual_seed(0)
        strategy = _strategy(component_anchor_weight=weight)
        strategy.train_epochs = 2
        own_value_probability[weight] = []
        for t, experience in enumerate(stream.train_stream):
            strategy.train(experience)
            x = torch.stack([stream.test_stream[t].dataset[i][0] for i in range(256)])
            with torch.no_grad():
                q = strategy.model.eval().encode(x)[2].softmax(-1)
            own_value_probability[weight].append(q[:, t].mean().item())
            if weight > 0:
                assert (q.argmax(-1) == t).float().mean() >= 0.9, f"experience {t}: {q.argmax(-1).bincount().tolist()}"
    # The first experience has a single value; on the later ones the anchor makes q(z_d = t | x) more certain.
    assert own_value_probability[0.0][0] == own_value_probability[100.0][0] == 1.0
    assert all(anchored > free for free, anchored in zip(own_value_probability[0.0][1:],
                                                         own_value_probability[100.0][1:])), own_value_probability
