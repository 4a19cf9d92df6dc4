"""Weights for comparison: realistic random values, the same NumPy state for both twins.

Fresh initialisation is degenerate for comparison (box heads start at zero, so every
decoder layer's boxes are equal and refinement is never exercised; activations are
tiny), so parity runs use ``realistic_random_state``: every parameter and BatchNorm
statistic gets random values of the scale a trained model has. The state is NumPy,
keyed by state_dict name, and is loaded into both models, so they hold identical
weights. Loading checks keys and shapes (each twin's ``checkpoint.load_model_state``).
"""
import numpy as np


def realistic_random_state(shapes, seed=0):
    """``{name: array}`` for ``{name: (shape, dtype)}`` with trained-model-like scales.
    1-D weights are norm scales (conv, linear and embedding weights have 2+ dims);
    embeddings are N(0, 1) as torch initialises them (query content, not a projection)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in shapes.items():
        dtype = np.dtype(dtype)
        leaf = name.rsplit(".", 1)[-1]
        if not np.issubdtype(dtype, np.floating):
            out[name] = np.zeros(shape, dtype)
        elif leaf == "running_mean":
            out[name] = rng.normal(0.0, 0.2, shape).astype(dtype)
        elif leaf == "running_var":
            out[name] = rng.uniform(0.5, 2.0, shape).astype(dtype)
        elif leaf == "weight" and len(shape) == 1:
            out[name] = rng.uniform(0.7, 1.3, shape).astype(dtype)
        elif "embed" in name.split(".")[-2]:
            out[name] = rng.normal(0.0, 1.0, shape).astype(dtype)
        elif leaf in ("bias", "in_proj_bias") or len(shape) <= 1:
            out[name] = rng.normal(0.0, 0.1, shape).astype(dtype)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[name] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape).astype(dtype)
    return out


def torch_shapes(model):
    """``{name: (shape, dtype)}`` of a torch model's state_dict (for ``realistic_random_state``)."""
    return {k: (tuple(v.shape), v.detach().cpu().numpy().dtype) for k, v in model.state_dict().items()}
