"""The Jittor twin's engine: ``rtdetr_common.engine.Engine`` over ``rtdetr_jittor.backend``.
``reference_pytorch.engine.Engine`` is its twin."""
from rtdetr_common.engine import Engine as CommonEngine

from . import backend


class Engine(CommonEngine):
    backend = backend
    framework = backend.NAME
