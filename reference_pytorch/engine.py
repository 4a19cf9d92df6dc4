"""The reference's engine: ``rtdetr_common.engine.Engine`` over ``reference_pytorch.backend``.
``rtdetr_jittor.engine.Engine`` is its twin."""
from rtdetr_common.engine import Engine as CommonEngine

from . import backend


class Engine(CommonEngine):
    backend = backend
    framework = backend.NAME
