"""The LifelongVAE: one VAE with a classifier head and a growing discrete latent.

Latent z = [z_c, z_d] with q(z|x) = q(z_c|x) q(z_d|x) (LGM Sec. 4.3):
z_c is a diagonal Gaussian (prior N(0, I)), z_d a categorical over
``discrete_dim`` values relaxed with Gumbel-softmax while training (prior
uniform). The decoder p(x|z) is Bernoulli over pixels. The classifier reads
either the same latent sample, p(y|z) (CCL-GM Fig. 1, ``classifier_input="latent"``),
or the encoder's hidden features that the latent heads read too
(``classifier_input="features"``, as replay-through-feedback does: van de Ven
& Tolias 2018, "Generative replay with feedback connections").
"""

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    RelaxedOneHotCategorical,
)

from ..validation import (
    check_finite,
    check_images,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
)
from .activations import ELU
from .backbones import (DENSE_NORMALIZATIONS, ConvDecoder, ConvEncoder, DenseDecoder, DenseEncoder, LatentProjection,
                        dense_normalization, glorot_linear)
from .output import LVAEOutput

__all__ = ["LifelongVAE", "LVAEOutput"]

_ARCHITECTURES = {"dense": (DenseEncoder, DenseDecoder), "conv": (ConvEncoder, ConvDecoder)}


class LifelongVAE(nn.Module):
    """VAE + classifier with a continuous and a growing discrete latent.

    Args:
        input_shape: ``(C, H, W)`` of the images, pixels in [0, 1].
        num_classes: number of outputs of the classifier p(y|z).
        arch: ``"dense"`` (2 x ``hidden_dim`` layers each way, ``normalization`` + ELU) or
            ``"conv"`` (the GroupNorm + ELU stack of LGM App. 9.3, Eq. 14;
            images up to 32x32).
        continuous_dim: size of z_c (paper default 14).
        discrete_dim: initial number of values of z_d (1 for the lifelong
            model; baselines get the final number from the start).
        hidden_dim: width of the dense layers and of the classifier head.
        conv_width: with ``arch="conv"``, the first layer's filter count;
            Eq. 14 has 32 (default) and every layer's channels scale with it;
            the compute scales about as its square (``benchmarks/speed.py
            --conv-only`` measures the step time against the dense model's).
        initial_temperature: Gumbel-softmax temperature at iteration 0.
        min_temperature: the temperature is never annealed below this.
        temperature_anneal_rate: tau = max(initial * exp(-rate * iteration), min).
        temperature_anneal_interval: tau is updated every this many iterations
            (the authors' schedule: 1.0, 3e-5, every 10 iterations, floor 0.5).
        classifier_input: what the classifier reads. ``"features"`` (default):
            one linear layer on the encoder's hidden features, the input of
            q(z|x) too (replay-through-feedback's classifier); it sees the whole
            feature vector instead of a 14-dimensional noisy sample, and is
            deterministic in training as at test time. ``"latent"``: p(y|z), a
            hidden layer on z = [z_c, z_d] (CCL-GM Eq. 4), sampled z while
            training and the posterior mode at test time.
        normalization: the normalisation of the dense hidden layers (``arch="dense"``). ``"batch"`` (default):
            BatchNorm (LGM App. 9.3). ``"layer"``: LayerNorm, which normalises each row by itself, so that
            training and evaluation compute the same function and no running statistics mix real and replayed
            batches: on 10-task permuted MNIST it forgets less than BatchNorm (docs/results.md). Plain layers
            without normalisation (replay-through-feedback's) were measured worse there and are not offered.
    """

    CLASSIFIER_INPUTS = ("features", "latent")
    NORMALIZATIONS = DENSE_NORMALIZATIONS

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        arch: str = "dense",
        continuous_dim: int = 14,
        discrete_dim: int = 1,
        hidden_dim: int = 512,
        conv_width: int = 32,
        initial_temperature: float = 1.0,
        min_temperature: float = 0.5,
        temperature_anneal_rate: float = 3e-5,
        temperature_anneal_interval: int = 10,
        classifier_input: str = "features",
        normalization: str = "batch",
    ):
        super().__init__()
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in input_shape):
            raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}.")
        if arch not in _ARCHITECTURES:
            raise ValueError(f"arch must be one of {sorted(_ARCHITECTURES)}, got {arch!r}.")
        if classifier_input not in self.CLASSIFIER_INPUTS:
            raise ValueError(f"classifier_input must be one of {self.CLASSIFIER_INPUTS}, got {classifier_input!r}.")
        self.classifier_input = classifier_input
        self.input_shape = input_shape
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.arch = arch
        self.continuous_dim = check_positive_int(continuous_dim, "continuous_dim")
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        check_positive_int(discrete_dim, "discrete_dim")
        self.initial_temperature = check_positive_float(initial_temperature, "initial_temperature")
        self.min_temperature = check_positive_float(min_temperature, "min_temperature")
        if self.min_temperature > self.initial_temperature:
            raise ValueError(
                f"min_temperature ({min_temperature}) must not exceed initial_temperature ({initial_temperature})."
            )
        self.temperature_anneal_rate = check_non_negative_float(temperature_anneal_rate, "temperature_anneal_rate")
        self.temperature_anneal_interval = check_positive_int(temperature_anneal_interval,
                                                              "temperature_anneal_interval")

        encoder_cls, decoder_cls = _ARCHITECTURES[arch]
        self.conv_width = check_positive_int(conv_width, "conv_width")
        if arch == "conv" and normalization != "batch":
            raise ValueError(f"normalization={normalization!r} applies to arch='dense'; the conv stack always uses "
                             "GroupNorm (LGM Eq. 14). Leave normalization at its default with arch='conv'.")
        self.normalization = normalization
        body = dict(width=self.conv_width) if arch == "conv" else dict(normalization=normalization)
        self.encoder = encoder_cls(input_shape, hidden_dim, **body)
        self.continuous_head = nn.Linear(self.encoder.out_features, 2 * continuous_dim)
        self.discrete_head = glorot_linear(self.encoder.out_features, discrete_dim)
        self.decoder_projection = LatentProjection(continuous_dim, discrete_dim, hidden_dim)
        self.decoder = decoder_cls(input_shape, hidden_dim, **body)
        if classifier_input == "latent":
            # Classifier p(y|z): z -> hidden -> classes, normalisation (BatchNorm in CCL-GM's code) + ELU.
            self.classifier_projection = LatentProjection(continuous_dim, discrete_dim, hidden_dim)
            self.classifier = nn.Sequential(dense_normalization(normalization, hidden_dim), ELU(),
                                            nn.Linear(hidden_dim, num_classes))
        else:
            # The encoder's features already end in normalisation + ELU: one linear
            # layer, as replay-through-feedback's classifier.
            self.classifier_projection = None
            self.classifier = nn.Linear(self.encoder.out_features, num_classes)
        # Buffers, so that the annealing schedule survives state_dict checkpoints.
        self.register_buffer("temperature", torch.tensor(float(initial_temperature)))
        self.register_buffer("train_iterations", torch.tensor(0, dtype=torch.long))
        self._host_iterations: Optional[int] = 0  # host mirror of the two buffers, see step_temperature
        self._host_temperature = float(initial_temperature)
        # p(z_c | z_d = j) used for generation: N(0, I) for every j unless a
        # fitted prior was set (``set_component_prior``, an option beyond the
        # papers); buffers, so teacher copies and checkpoints carry it.
        self.register_buffer("component_loc", torch.zeros(discrete_dim, continuous_dim))
        self.register_buffer("component_scale_tril", torch.eye(continuous_dim).repeat(discrete_dim, 1, 1))

    # ------------------------------------------------------------------ sizes
    @property
    def discrete_dim(self) -> int:
        """Current number of values of z_d (one per distribution seen)."""
        return self.discrete_head.out_features

    # ------------------------------------------------------------ components
    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loc, scale, discrete_logits)`` of q(z_c|x) and q(z_d|x)."""
        return self._latent_heads(self.encoder(x))

    def _latent_heads(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.continuous_head(features).chunk(2, dim=-1)
        # softplus keeps the scale positive without the overflow of exp(log_var).
        scale = F.softplus(raw_scale) + 1e-4
        return loc, scale, self.discrete_head(features)

    def encode_and_classify(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One encoder pass: ``(loc, scale, discrete_logits, class_logits)``, the class
        logits computed as at test time (from the features, or at the posterior mode)."""
        features = self.encoder(x)
        loc, scale, discrete_logits = self._latent_heads(features)
        if self.classifier_input == "features":
            return loc, scale, discrete_logits, self.classifier(features)
        return loc, scale, discrete_logits, self.classify_posterior_mode(loc, discrete_logits)

    def decode(self, z_continuous: torch.Tensor, z_discrete: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x|z), shape ``[N, *input_shape]``."""
        return self.decoder(self.decoder_projection(z_continuous, z_discrete))

    def classify(self, z_continuous: torch.Tensor, z_discrete: torch.Tensor) -> torch.Tensor:
        """Class logits of p(y|z), shape ``[N, num_classes]`` (``classifier_input="latent"`` only)."""
        if self.classifier_projection is None:
            raise ValueError(
                'classify(z) needs classifier_input="latent"; this model classifies the encoder\'s features: '
                "use encode_and_classify(x)."
            )
        return self.classifier(self.classifier_projection(z_continuous, z_discrete))

    def classify_posterior_mode(self, loc: torch.Tensor, discrete_logits: torch.Tensor) -> torch.Tensor:
        """Class logits at the mode of q(z|x): z_c = its mean, z_d = one-hot argmax (how x is classified at test)."""
        return self.classify(loc, self._one_hot_mode(discrete_logits).to(loc.dtype))

    def _one_hot_mode(self, discrete_logits: torch.Tensor) -> torch.Tensor:
        return F.one_hot(discrete_logits.argmax(-1), self.discrete_dim)

    def forward(self, x: torch.Tensor, sample: Optional[bool] = None) -> LVAEOutput:
        """Encode, draw z, decode and classify.

        Args:
            x: images ``[N, *input_shape]`` with pixels in [0, 1].
            sample: draw z from q(z|x) (True) or use its mode (False). Defaults
                to ``self.training``: a reparameterised Gaussian sample and a
                Gumbel-softmax relaxed z_d while training, the posterior mode
                (mean of z_c, argmax of z_d) at evaluation. ``sample=True`` in
                eval mode draws a hard one-hot z_d, for ELBO estimates.

        With ``classifier_input="latent"`` the class logits are computed from
        the sample while training and from the posterior mode at evaluation, so
        accuracy is deterministic even when the reconstruction is sampled; with
        ``"features"`` they never depend on the sample.
        """
        check_images(x, self.input_shape, "LifelongVAE.forward")
        weight_dtype = self.continuous_head.weight.dtype
        if x.dtype != weight_dtype:  # else torch fails deep inside a Linear with "mat1 and mat2 ..."
            raise ValueError(
                f"LifelongVAE.forward: images have dtype {x.dtype} but the model's weights are {weight_dtype}; "
                f"convert the images with x.to({weight_dtype}) (or the model with model.to({x.dtype}))."
            )
        features = self.encoder(x)
        loc, scale, discrete_logits = self._latent_heads(features)
        for name, value in (("continuous_loc", loc), ("continuous_scale", scale), ("discrete_logits", discrete_logits)):
            # Diverged weights (e.g. a learning rate far too large): fail with a
            # readable error instead of inside torch.distributions. Inside the
            # training step (validation.deferred_checks) this is only recorded
            # on the device and read back every few iterations by the template.
            check_finite(f"encoder {name}", value,
                         f"the encoder produced non-finite {name}: the weights have diverged")
        sample = self.training if sample is None else sample
        if not sample:
            z_continuous, z_discrete = loc, self._one_hot_mode(discrete_logits).to(loc.dtype)
        elif self.training:
            z_continuous = Normal(loc, scale).rsample()
            z_discrete = RelaxedOneHotCategorical(self.temperature, logits=discrete_logits).rsample()
        else:
            z_continuous = Normal(loc, scale).sample()
            z_discrete = OneHotCategorical(logits=discrete_logits).sample()
        if self.classifier_input == "features":
            class_logits = self.classifier(features)
        elif self.training:
            class_logits = self.classify(z_continuous, z_discrete)
        else:
            class_logits = self.classify_posterior_mode(loc, discrete_logits)
        return LVAEOutput(
            class_logits=class_logits,
            reconstruction_logits=self.decode(z_continuous, z_discrete),
            continuous_loc=loc,
            continuous_scale=scale,
            discrete_logits=discrete_logits,
            z_continuous=z_continuous,
            z_discrete=z_discrete,
            inputs=x,
        )

    # ------------------------------------------------------------ generation
    @staticmethod
    def equal_share_components(n: int, k: int, device=None) -> torch.Tensor:
        """The z_d value of each of ``n`` rows in equal contiguous shares over ``k`` values (LGM Sec. 4.3): row i
        gets ``i * k // n``, so value j has rows ``ceil(j n / k)`` up to ``ceil((j + 1) n / k)``."""
        return torch.arange(n, device=device) * k // n

    def sample_latent(
        self, n: int, component: Optional[int] = None, num_components: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` latents from the prior with z_d fixed per row.

        z_c ~ p(z_c | z_d): N(0, I) (the papers) unless ``set_component_prior``
        fitted a Gaussian for that component.

        Returns ``(z_continuous, z_discrete_one_hot, components)``. With
        ``component=None`` the rows are split into equal contiguous shares over
        the first ``num_components`` values of z_d (default all ``discrete_dim``;
        LGM Sec. 4.3: about n/k per distribution).
        """
        check_positive_int(n, "n")
        device = self.temperature.device
        if component is None:
            spread = self.discrete_dim if num_components is None else check_positive_int(num_components,
                                                                                         "num_components")
            if spread > self.discrete_dim:
                raise ValueError(f"num_components must be at most discrete_dim={self.discrete_dim}, got {spread}.")
            components = self.equal_share_components(n, spread, device)
        elif num_components is not None:
            raise ValueError("pass either component (one value for every row) or num_components, not both.")
        else:
            if isinstance(component, bool) or not isinstance(component, int) or not 0 <= component < self.discrete_dim:
                raise ValueError(
                    f"component must be an int in [0, {self.discrete_dim}) (the model has discrete_dim="
                    f"{self.discrete_dim}), got {component!r}."
                )
            components = torch.full((n,), component, device=device, dtype=torch.long)
        # rsample is loc + L @ eps with eps ~ N(0, I): with the default loc 0
        # and L = I this is exactly z_c ~ N(0, I), bit for bit (same random
        # numbers as before fitting). The factors are valid by construction
        # (identity or set_component_prior's Cholesky), hence no re-validation.
        prior = MultivariateNormal(self.component_loc[components],
                                   scale_tril=self.component_scale_tril[components], validate_args=False)
        z_continuous = prior.rsample()
        z_discrete = F.one_hot(components, self.discrete_dim).to(z_continuous.dtype)
        return z_continuous, z_discrete, components

    def sample(self, n: int, component: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Generate ``n`` images: z_d fixed to ``component`` (or spread evenly
        over all components when None), z_c ~ p(z_c | z_d) (N(0, I) unless fitted).

        Returns ``(images, components)``: images ``[n, *input_shape]`` are the
        Bernoulli means in [0, 1]; ``components[i]`` is the z_d value of row i.
        Gradients flow unless the caller disables them (the teacher always
        samples under ``torch.no_grad()``).
        """
        z_continuous, z_discrete, components = self.sample_latent(n, component)
        return torch.sigmoid(self.decode(z_continuous, z_discrete)), components

    # ------------------------------------------------------------- lifelong
    @torch.no_grad()
    def grow_discrete(self, k: int = 1) -> None:
        """Add ``k`` values to z_d.

        Only the layers that project into z_d (``discrete_head``) and out of it
        (the z_d blocks of ``decoder_projection`` and, with a latent
        classifier, ``classifier_projection``)
        are replaced by Glorot-initialised layers of the new size; every other
        weight is kept, so the rest of the network is bit-identical. An
        optimizer built before growing no longer sees the new layers: rebuild it.
        """
        check_positive_int(k, "k")
        new_dim = self.discrete_dim + k
        old = self.discrete_head.weight
        self.discrete_head = glorot_linear(self.encoder.out_features, new_dim).to(old)
        self.decoder_projection.grow_discrete(new_dim)
        if self.classifier_projection is not None:
            self.classifier_projection.grow_discrete(new_dim)
        # New components start with the papers' N(0, I) prior on z_c.
        self.component_loc = torch.cat([self.component_loc, self.component_loc.new_zeros(k, self.continuous_dim)])
        eye = torch.eye(self.continuous_dim, dtype=self.component_scale_tril.dtype,
                        device=self.component_scale_tril.device)
        self.component_scale_tril = torch.cat([self.component_scale_tril, eye.repeat(k, 1, 1)])

    @torch.no_grad()
    def set_component_prior(self, component: int, loc: torch.Tensor, covariance: torch.Tensor) -> None:
        """Generate component ``component`` with z_c ~ N(loc, covariance) instead of N(0, I).

        ``covariance`` must be symmetric positive definite (``[continuous_dim]*2``);
        it is stored as its Cholesky factor. Training's KL terms are unchanged:
        this only moves where ``sample`` draws z_c (ex-post density estimation,
        Ghosh et al. 2020).
        """
        if isinstance(component, bool) or not isinstance(component, int) or not 0 <= component < self.discrete_dim:
            raise ValueError(f"component must be an int in [0, {self.discrete_dim}), got {component!r}.")
        size = self.continuous_dim
        if tuple(loc.shape) != (size,) or tuple(covariance.shape) != (size, size):
            raise ValueError(f"loc must have shape ({size},) and covariance ({size}, {size}), got "
                             f"{tuple(loc.shape)} and {tuple(covariance.shape)}.")
        scale_tril, info = torch.linalg.cholesky_ex(covariance.to(self.component_scale_tril))
        if int(info) != 0 or not torch.isfinite(loc).all():
            raise ValueError("covariance must be symmetric positive definite and loc finite; add a small "
                             "multiple of the identity to a rank-deficient covariance.")
        self.component_loc[component] = loc.to(self.component_loc)
        self.component_scale_tril[component] = scale_tril

    @torch.no_grad()
    def step_temperature(self) -> float:
        """Count one training iteration and anneal the Gumbel-softmax temperature.

        tau = max(initial * exp(-rate * t), min), refreshed every
        ``temperature_anneal_interval`` iterations. Returns the current tau.
        """
        # The count is mirrored on the host so that annealing never reads the
        # buffer back from the device (one sync per step on a GPU); the mirror
        # is re-read from the buffer once after load_state_dict.
        if self._host_iterations is None:
            self._host_iterations = int(self.train_iterations)
            self._host_temperature = float(self.temperature)
        self.train_iterations += 1
        self._host_iterations += 1
        t = self._host_iterations
        if t % self.temperature_anneal_interval == 0:
            tau = max(self.initial_temperature * math.exp(-self.temperature_anneal_rate * t), self.min_temperature)
            self.temperature.fill_(tau)
            self._host_temperature = tau
        return self._host_temperature

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._host_iterations = None  # the buffers change: re-read them at the next step
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, arch={self.arch!r}, "
            f"continuous_dim={self.continuous_dim}, discrete_dim={self.discrete_dim}, "
            f"classifier_input={self.classifier_input!r}"
        )
