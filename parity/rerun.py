"""Rerun one saved module alone in both frameworks (the first divergence of a report).

``save_first_divergence`` writes the module's path, the config, its weights and the
inputs the reference fed it; this builds both models from the config, takes the
submodule at that path on each side, loads the weights, feeds the inputs, and
compares the outputs with the tolerance registry.
"""
import numpy as np

import reference_pytorch.backend as reference_backend
import rtdetr_jittor.backend as jittor_backend

from .capture import flatten
from .tolerances import load_registry


def submodule(model, path):
    """The submodule at a dotted ``path`` (list indices as numbers), in either framework."""
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def _run_module(backend, config, module_path, weights, inputs, eval_mode):
    module = submodule(backend.build(config).model, module_path)
    backend.load_model_state(module, weights)
    backend.set_mode(module, not eval_mode)
    with backend.no_grad():
        return flatten(module_path, module(*[backend.from_numpy(a) for a in inputs]), backend.to_numpy)


def rerun_saved_module(npz_path, eval_mode=True):
    saved = np.load(npz_path)
    module_path, config = str(saved["__module__"]), str(saved["__config__"])
    weights = {k[2:]: saved[k] for k in saved.files if k.startswith("w:")}
    inputs = [saved[f"in:{i}"] for i in range(sum(k.startswith("in:") for k in saved.files))]
    ref_out = _run_module(reference_backend, config, module_path, weights, inputs, eval_mode)
    jt_out = dict(_run_module(jittor_backend, config, module_path, weights, inputs, eval_mode))
    registry = load_registry()
    results = [registry.judge(name, value, jt_out[name]) for name, value in ref_out]
    return {"module": module_path, "passed": all(r.passed for r in results),
            "outputs": [{"name": r.name, "passed": r.passed, "max_abs": r.metrics.get("max_abs")} for r in results]}
