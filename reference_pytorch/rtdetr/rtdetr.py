"""RTDETR: backbone -> hybrid encoder -> transformer decoder, with multi-scale training."""
import numpy as np
import torch.nn as nn
import torch.nn.functional as F

from rtdetr_common import probes


class RTDETR(nn.Module):
    """The detector. Attribute order (backbone, decoder, encoder) fixes the official
    state_dict order. ``size_sampler`` picks the multi-scale size (default: NumPy's
    global RNG, as the official code); the harness may set a seeded sampler. Probe
    ``input.resized``: the image batch after the multi-scale resize."""

    def __init__(self, backbone, encoder, decoder, multi_scale=None):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.encoder = encoder
        self.multi_scale = multi_scale
        self.size_sampler = np.random

    def forward(self, x, targets=None):
        if self.multi_scale and self.training:
            size = int(self.size_sampler.choice(self.multi_scale))
            x = F.interpolate(x, size=[size, size], mode="nearest")
            probes.record("input.resized", x)
        feats = self.backbone(x)
        feats = self.encoder(feats)
        return self.decoder(feats, targets)

    def deploy(self):
        """Eval mode with every re-parameterisable block fused (RepVGG)."""
        self.eval()
        for m in self.modules():
            if hasattr(m, "convert_to_deploy"):
                m.convert_to_deploy()
        return self
