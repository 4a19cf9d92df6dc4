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

from rtdetr_jittor._env import jt
from rtdetr_jittor.compat import freeze, load_state_dict_checked


class ModelEMA:
    """Keeps ``module``, an averaged copy of the model, in eval mode and frozen."""

    def __init__(self, model, decay=0.9999, warmups=2000):
        self.module = _copy_model(model)
        freeze(self.module)
        self.module.eval()
        self.decay = decay
        self.warmups = warmups
        self.updates = 0

    def decay_at(self, updates):
        return self.decay * (1 - math.exp(-updates / self.warmups))

    def update(self, model):
        self.updates += 1
        d = self.decay_at(self.updates)
        current = model.state_dict()
        averaged = self.module.state_dict()
        for k, v in averaged.items():
            if v.dtype.is_float():
                v.update((v * d + current[k].detach() * (1 - d)).detach())
        jt.sync(list(averaged.values()))

    def state_dict(self):
        return {"module": {k: v.numpy() for k, v in self.module.state_dict().items()},
                "updates": self.updates, "decay": self.decay, "warmups": self.warmups}

    def load_state_dict(self, state):
        load_state_dict_checked(self.module, state["module"], strict=True)
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
