"""Record what a model computes: every named submodule's output, and probe points.

Module paths are identical in both twins by construction, so the records of the
two frameworks line up by name. Records come in execution order (a module's output
is recorded when its forward returns, so children precede parents). A module or probe
called more than once gets ``#1``, ``#2``... suffixes. Outputs that are tuples, lists or
dicts are flattened to ``name.0``, ``name.key``. Inputs of chosen modules can be kept,
so the first diverging module can be rerun alone.
"""
from dataclasses import dataclass, field

import numpy as np

from rtdetr_common import probes


@dataclass
class Record:
    name: str
    value: np.ndarray
    module: str
    kind: str  # "module", "probe", "extra" (losses, gradients, training state) or "no-gradient"


@dataclass
class Capture:
    records: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # module path -> list of input arrays

    def by_name(self):
        return {r.name: r for r in self.records}


def flatten(name, value, to_numpy):
    """``[(name, array)]`` for a tensor or a nested tuple/list/dict of tensors."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.extend(flatten(f"{name}.{k}", v, to_numpy))
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for i, v in enumerate(value):
            out.extend(flatten(f"{name}.{i}", v, to_numpy))
        return out
    array = to_numpy(value)
    return [] if array is None else [(name, array)]


def _named_modules(model):
    return [(n, m) for n, m in model.named_modules() if n]


def capture(model, run, backend, inputs_of=(), prefix="", sink=None):
    """Call ``run()`` with hooks on every submodule and a probe recorder; return (result, Capture).
    ``backend``: the model's framework glue (``reference_pytorch.backend`` or
    ``rtdetr_jittor.backend``). ``sink``: where records go as they are made (anything with
    ``append``, e.g. ``parity.store.CaptureWriter``); default a list in the Capture.
    Inputs are kept only for the module paths in ``inputs_of`` (they cost as much memory
    as the outputs, and only the first diverging module's are needed)."""
    to_numpy = backend.to_numpy
    cap = Capture(records=sink if sink is not None else [])
    calls = {}

    def make_hook(path):
        def hook(module, inputs, output, *rest):
            n = calls.get(path, 0)
            calls[path] = n + 1
            name = f"{prefix}{path}" + (f"#{n}" if n else "")
            for sub, array in flatten(name, output, to_numpy):
                cap.records.append(Record(sub, array, path, "module"))
            if path in inputs_of and n == 0:
                cap.inputs[path] = [a for _, a in flatten("in", list(inputs), to_numpy)]
        return hook

    removers = [backend.add_forward_hook(module, make_hook(path)) for path, module in _named_modules(model)]

    probe_calls = {}

    def on_probe(name, value):
        n = probe_calls.get(name, 0)
        probe_calls[name] = n + 1
        for sub, array in flatten(f"probe:{name}" + (f"#{n}" if n else ""), value, to_numpy):
            cap.records.append(Record(sub, array, name.split(".")[0], "probe"))

    try:
        with probes.recording(on_probe):
            result = run()
    finally:
        for remove in removers:
            remove()
    return result, cap
