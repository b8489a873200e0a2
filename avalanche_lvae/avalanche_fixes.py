"""Work-arounds for Avalanche 0.6 bugs that affect the baselines this package is compared with."""

import contextlib

import torch

__all__ = ["synaptic_intelligence_weight_copies"]


@contextlib.contextmanager
def synaptic_intelligence_weight_copies():
    """Make Avalanche 0.6's Synaptic Intelligence work on a CPU model, for the duration of the block.

    ``SynapticIntelligencePlugin.extract_weights`` stores
    ``param.detach().cpu().flatten()``: for a CPU parameter that is a view,
    not a copy, so the "old" and "new" weights of each step alias the
    parameter, the path integral (hence every importance) is 0 and SI trains
    exactly as Naive (measured: the same accuracy to 4 digits for si_lambda
    from 0.1 to 1000). The plugin calls the method through its class, so it
    is replaced there, by the same code plus ``clone()``, and restored after::

        with synaptic_intelligence_weight_copies():
            si_strategy.train(experience)
    """
    from avalanche.training.plugins import SynapticIntelligencePlugin as SI

    original = SI.__dict__["extract_weights"]

    @torch.no_grad()
    def extract_weights(model, target, excluded_parameters):
        for name, param in SI.allowed_parameters(model, excluded_parameters):
            target[name].data = param.detach().cpu().flatten().clone()

    SI.extract_weights = staticmethod(extract_weights)
    try:
        yield
    finally:
        SI.extract_weights = original
