"""Framework-neutral weight conversion: read any RT-DETR weights file, write it for
PyTorch, Jittor or HuggingFace (``python -m rtdetr_convert``, see ``cli``).

``read_state_dict(path) -> (state, format)`` is the one entry point for everyone who
reads weights: ``state`` is ``{official rtdetr_pytorch name: numpy array}``, ``format``
one of ``FORMATS``. Modules: ``read`` (formats in), ``write`` (formats out), ``hf``
(official <-> HuggingFace names), ``hf_config`` (HuggingFace config from our YAML),
``fit`` (strict checks against a config's model), ``verify`` (``--verify`` through the
parity harness), ``cli``. Importing this package imports no framework; each function
imports the one it needs.
"""
from .fit import align_counters
from .read import FORMATS, read_state_dict

__all__ = ["FORMATS", "align_counters", "read_state_dict"]
