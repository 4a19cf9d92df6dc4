"""The ResNet-vd backbone of RT-DETR (``PResNet``) and its conv/norm building blocks."""
from .common import ConvNormLayer, FrozenBatchNorm2d, freeze_batch_norm2d
from .presnet import PResNet

__all__ = ["ConvNormLayer", "FrozenBatchNorm2d", "freeze_batch_norm2d", "PResNet"]
