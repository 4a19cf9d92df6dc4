"""Build the model, criterion and post-processor from an official-format YAML config."""
from dataclasses import dataclass, field

from rtdetr_common.config import load_config
from rtdetr_common.instantiate import instantiate

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


@dataclass
class Built:
    """What ``build`` returns: the three objects and the resolved config."""
    model: object
    criterion: object
    postprocessor: object
    cfg: dict = field(repr=False)


def build(config_path, overrides=None):
    """Build from ``config_path`` with ``overrides`` (nested dict) merged over the YAML."""
    cfg = load_config(config_path, overrides)
    return Built(
        model=instantiate(cfg, REGISTRY, cfg["model"]),
        criterion=instantiate(cfg, REGISTRY, cfg["criterion"]),
        postprocessor=instantiate(cfg, REGISTRY, cfg["postprocessor"]),
        cfg=cfg,
    )
