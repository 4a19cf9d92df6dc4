"""The Jittor twin's classes by config name; ``build`` makes model, criterion and post-processor
from an official-format YAML config (``rtdetr_common.build``)."""
from rtdetr_common.build import build_from_registry

from .backbone.presnet import PResNet
from .rtdetr.hybrid_encoder import HybridEncoder
from .rtdetr.matcher import HungarianMatcher
from .rtdetr.rtdetr import RTDETR
from .rtdetr.rtdetr_criterion import SetCriterion
from .rtdetr.rtdetr_decoder import RTDETRTransformer
from .rtdetr.rtdetr_postprocessor import RTDETRPostProcessor

REGISTRY = {cls.__name__: cls for cls in (
    RTDETR, PResNet, HybridEncoder, RTDETRTransformer,
    SetCriterion, HungarianMatcher, RTDETRPostProcessor)}


def build(config_path, overrides=None):
    """Build from ``config_path`` with ``overrides`` (nested dict) merged over the YAML."""
    return build_from_registry(REGISTRY, config_path, overrides)
