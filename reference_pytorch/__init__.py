"""The pinned PyTorch reference of RT-DETR (v1), checkpoint-compatible with the
official ``rtdetr_pytorch``. ``build(config_path, overrides=None)`` returns an object
with ``.model``, ``.criterion``, ``.postprocessor`` and ``.cfg``."""


def build(config_path, overrides=None):
    from .builder import build as _build
    return _build(config_path, overrides)
