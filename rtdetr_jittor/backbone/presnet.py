"""PResNet: the ResNet (variants a-d, depths 18/34/50/101) backbone of RT-DETR.

Variant 'd' ("ResNet-vd") has a three-conv 3x3 stem and, where a stage downsamples,
an average-pool + 1x1-conv shortcut; variants 'b' and later put a bottleneck's stride
in its 3x3 conv. Returns the feature maps of the stages listed in ``return_idx``.
"""
import logging
from collections import OrderedDict

from rtdetr_jittor._env import jt  # noqa: F401  (configures Jittor before jittor.nn loads)
from jittor import nn

from ..compat import AvgPool2d, freeze, max_pool2d
from ..rtdetr.utils import get_activation
from .common import ConvNormLayer, freeze_batch_norm2d

logger = logging.getLogger(__name__)

ResNet_cfg = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
}


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""
    expansion = 1

    def __init__(self, ch_in, ch_out, stride, shortcut, act="relu", variant="b"):
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            if variant == "d" and stride == 2:
                self.short = nn.Sequential(OrderedDict([
                    ("pool", AvgPool2d(2, 2, 0, ceil_mode=True)),
                    ("conv", ConvNormLayer(ch_in, ch_out, 1, 1)),
                ]))
            else:
                self.short = ConvNormLayer(ch_in, ch_out, 1, stride)

        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, act=act)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1, act=None)
        self.act = nn.Identity() if act is None else get_activation(act)

    def execute(self, x):
        out = self.branch2a(x)
        out = self.branch2b(out)
        short = x if self.shortcut else self.short(x)
        out = out + short
        return self.act(out)


class BottleNeck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) with a residual connection (ResNet-50/101)."""
    expansion = 4

    def __init__(self, ch_in, ch_out, stride, shortcut, act="relu", variant="b"):
        super().__init__()
        if variant == "a":
            stride1, stride2 = stride, 1
        else:
            stride1, stride2 = 1, stride

        width = ch_out
        self.branch2a = ConvNormLayer(ch_in, width, 1, stride1, act=act)
        self.branch2b = ConvNormLayer(width, width, 3, stride2, act=act)
        self.branch2c = ConvNormLayer(width, ch_out * self.expansion, 1, 1)

        self.shortcut = shortcut
        if not shortcut:
            if variant == "d" and stride == 2:
                self.short = nn.Sequential(OrderedDict([
                    ("pool", AvgPool2d(2, 2, 0, ceil_mode=True)),
                    ("conv", ConvNormLayer(ch_in, ch_out * self.expansion, 1, 1)),
                ]))
            else:
                self.short = ConvNormLayer(ch_in, ch_out * self.expansion, 1, stride)

        self.act = nn.Identity() if act is None else get_activation(act)

    def execute(self, x):
        out = self.branch2a(x)
        out = self.branch2b(out)
        out = self.branch2c(out)
        short = x if self.shortcut else self.short(x)
        out = out + short
        return self.act(out)


class Blocks(nn.Module):
    """One stage: ``count`` blocks; the first changes width (and stride, except stage 2)."""

    def __init__(self, block, ch_in, ch_out, count, stage_num, act="relu", variant="b"):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            self.blocks.append(block(
                ch_in, ch_out,
                stride=2 if i == 0 and stage_num != 2 else 1,
                shortcut=i != 0,
                variant=variant,
                act=act))
            if i == 0:
                ch_in = ch_out * block.expansion

    def execute(self, x):
        out = x
        for block in self.blocks:
            out = block(out)
        return out


class PResNet(nn.Module):
    """ResNet backbone. ``freeze_at >= 0`` freezes the stem and the first ``freeze_at``
    stages; ``freeze_norm`` turns every BatchNorm2d into a FrozenBatchNorm2d.
    ``pretrained=True`` fetches nothing (no network): it logs a warning and keeps the
    random initialisation."""

    def __init__(self, depth, variant="d", num_stages=4, return_idx=[0, 1, 2, 3], act="relu",
                 freeze_at=-1, freeze_norm=True, pretrained=False):
        super().__init__()
        block_nums = ResNet_cfg[depth]
        ch_in = 64
        if variant in ["c", "d"]:
            conv_def = [
                [3, ch_in // 2, 3, 2, "conv1_1"],
                [ch_in // 2, ch_in // 2, 3, 1, "conv1_2"],
                [ch_in // 2, ch_in, 3, 1, "conv1_3"],
            ]
        else:
            conv_def = [[3, ch_in, 7, 2, "conv1_1"]]

        self.conv1 = nn.Sequential(OrderedDict([
            (name, ConvNormLayer(cin, cout, k, s, act=act)) for cin, cout, k, s, name in conv_def
        ]))

        ch_out_list = [64, 128, 256, 512]
        block = BottleNeck if depth >= 50 else BasicBlock
        _out_channels = [block.expansion * v for v in ch_out_list]
        _out_strides = [4, 8, 16, 32]

        self.res_layers = nn.ModuleList()
        for i in range(num_stages):
            stage_num = i + 2
            self.res_layers.append(
                Blocks(block, ch_in, ch_out_list[i], block_nums[i], stage_num, act=act, variant=variant))
            ch_in = _out_channels[i]

        self.return_idx = return_idx
        self.out_channels = [_out_channels[i] for i in return_idx]
        self.out_strides = [_out_strides[i] for i in return_idx]

        if freeze_at >= 0:
            self._freeze_parameters(self.conv1)
            for i in range(min(freeze_at, num_stages)):
                self._freeze_parameters(self.res_layers[i])

        if freeze_norm:
            freeze_batch_norm2d(self)

        if pretrained:
            logger.warning("PResNet%d: pretrained ImageNet weights are not fetched (no network); "
                           "keeping the random initialisation. Load a checkpoint instead.", depth)

    @staticmethod
    def _freeze_parameters(m):
        freeze(m)

    def execute(self, x):
        conv1 = self.conv1(x)
        x = max_pool2d(conv1, kernel_size=3, stride=2, padding=1)
        outs = []
        for idx, stage in enumerate(self.res_layers):
            x = stage(x)
            if idx in self.return_idx:
                outs.append(x)
        return outs
