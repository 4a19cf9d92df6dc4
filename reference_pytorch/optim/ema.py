"""Exponential moving average of the model's weights with warm-up (official ModelEMA):
decay_t = decay * (1 - exp(-t / warmups)), applied to every floating-point entry of
the state_dict (buffers included).

The copy shares, rather than copies, the model's sources of randomness (a Python
module such as ``numpy.random`` as ``size_sampler``, or a noise object): modules
cannot be deep-copied, and the averaged model runs in eval mode, where neither is used.
"""
import copy
import math
import types

import torch


class ModelEMA:
    """Keeps ``module``, an averaged copy of the model, in eval mode and frozen."""

    def __init__(self, model, decay=0.9999, warmups=2000):
        self.module = _copy_model(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmups = warmups
        self.updates = 0

    def decay_at(self, updates):
        return self.decay * (1 - math.exp(-updates / self.warmups))

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay_at(self.updates)
        current = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(current[k].detach(), alpha=1 - d)

    def state_dict(self):
        return {"module": self.module.state_dict(), "updates": self.updates,
                "decay": self.decay, "warmups": self.warmups}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"], strict=True)
        self.updates = int(state["updates"])


SHARED_ATTRIBUTES = ("size_sampler", "denoising_noise")


def _copy_model(model):
    """Deep copy of ``model`` whose RNG attributes (``SHARED_ATTRIBUTES``, modules) are shared."""
    memo = {}
    for m in model.modules():
        for name, value in vars(m).items():
            if name in SHARED_ATTRIBUTES or isinstance(value, types.ModuleType):
                memo[id(value)] = value
    return copy.deepcopy(model, memo)
