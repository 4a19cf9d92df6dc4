"""Rerun one saved module alone in both frameworks (the first divergence of a report).

``save_first_divergence`` writes the module's path, the config, its weights and the
inputs the reference fed it; this builds both models from the config, takes the
submodule at that path on each side, loads the weights, feeds the inputs, and
compares the outputs with the tolerance registry.
"""
import numpy as np

from .capture import flatten, jittor_to_numpy, torch_to_numpy
from .run import jittor_array
from .tolerances import load_registry


def submodule(model, path):
    """The submodule at a dotted ``path`` (list indices as numbers), in either framework."""
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def rerun_saved_module(npz_path, eval_mode=True):
    import torch

    import reference_pytorch
    import rtdetr_jittor
    from rtdetr_jittor._env import jt
    from .weights import load_into_jittor, load_into_torch
    saved = np.load(npz_path)
    module_path, config = str(saved["__module__"]), str(saved["__config__"])
    weights = {k[2:]: saved[k] for k in saved.files if k.startswith("w:")}
    inputs = [saved[f"in:{i}"] for i in range(sum(k.startswith("in:") for k in saved.files))]
    ref_m = submodule(reference_pytorch.build(config).model, module_path)
    jt_m = submodule(rtdetr_jittor.build(config).model, module_path)
    load_into_torch(ref_m, weights)
    load_into_jittor(jt_m, weights)
    if eval_mode:
        ref_m.eval()
        jt_m.eval()
    with torch.no_grad():
        ref_out = flatten(module_path, ref_m(*[torch.from_numpy(a) for a in inputs]), torch_to_numpy)
    with jt.no_grad():
        jt_out = dict(flatten(module_path, jt_m(*[jittor_array(a) for a in inputs]), jittor_to_numpy))
    registry = load_registry()
    results = [registry.judge(name, value, jt_out[name]) for name, value in ref_out]
    return {"module": module_path, "passed": all(r.passed for r in results),
            "outputs": [{"name": r.name, "passed": r.passed, "max_abs": r.metrics.get("max_abs")} for r in results]}
