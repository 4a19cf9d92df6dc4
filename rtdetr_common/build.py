"""Build the model, criterion and post-processor from an official-format YAML config,
written once: each twin's ``builder`` passes its own registry of classes."""
from dataclasses import dataclass, field

from .config import load_config
from .instantiate import instantiate


@dataclass
class Built:
    """What ``build`` returns: the three objects and the resolved config."""
    model: object
    criterion: object
    postprocessor: object
    cfg: dict = field(repr=False)


def build_from_registry(registry, config_path, overrides=None):
    """Build from ``config_path`` with ``overrides`` (nested dict) merged over the YAML,
    instantiating the config's ``type`` names from ``registry``."""
    cfg = load_config(config_path, overrides)
    return Built(
        model=instantiate(cfg, registry, cfg["model"]),
        criterion=instantiate(cfg, registry, cfg["criterion"]),
        postprocessor=instantiate(cfg, registry, cfg["postprocessor"]),
        cfg=cfg,
    )
