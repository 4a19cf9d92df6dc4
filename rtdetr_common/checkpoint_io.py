"""Framework-neutral checkpoint files: a pickled dict of NumPy arrays and plain Python.

Both twins write this format, so a checkpoint written by one framework resumes in
the other. Writes are atomic (temporary file, fsync, rename): a crash mid-save never
destroys the previous file. Reads name the problem: a missing, truncated or foreign file.
``extract_model_state`` finds the model weights inside any supported layout (official
``['ema']['module']``, ``['model']``, a bare state_dict, or one of ours).
"""
import mmap
import os
import pickle

from .errors import RtdetrError, reason
from .files import write_atomic

FORMAT = "rtdetr-parity-checkpoint"
VERSION = 1


class CheckpointError(RtdetrError, RuntimeError):
    """A checkpoint that cannot be used, with the reason."""


class StateDictError(CheckpointError):
    """A state_dict whose keys or shapes do not match the model."""


def save_atomic(obj, path):
    """Pickle ``obj`` to ``path`` atomically."""
    write_atomic(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL), binary=True)


def write_checkpoint(path, payload):
    """Write a training checkpoint: ``payload`` plus the format marker."""
    save_atomic({"format": FORMAT, "version": VERSION, **payload}, path)


def load_pickle(path):
    """Unpickle ``path`` (ours, or a ``jt.save`` file); a missing or unreadable file raises
    ``CheckpointError`` saying which. Trailing bytes after the pickle (Jittor's checksum) are ignored."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # from a read-only map, not the file: a corrupt length field then fails as truncated
        # instead of asking for petabytes (MemoryError)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return pickle.loads(data)
    except Exception as e:  # a cut pickle fails in many ways: EOFError, UnpicklingError, ValueError, TypeError...
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({reason(e)})") from e


def read_checkpoint(path):
    """Read a checkpoint written by ``write_checkpoint``; fail with a clear reason."""
    obj = load_pickle(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file (for official .pth weights use the model-weights loader)")
    return obj


def extract_model_state(obj):
    """The model state_dict inside a checkpoint object: ours (``model``), official
    (``['ema']['module']`` preferred, then ``['model']``) or a bare state_dict."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj["model"]
    if isinstance(obj, dict) and isinstance(obj.get("ema"), dict) and isinstance(obj["ema"].get("module"), dict):
        return obj["ema"]["module"]
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict) and obj and all(hasattr(v, "shape") for v in obj.values()):
        return obj
    found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError("no model weights found: expected ['ema']['module'], ['model'] or a bare "
                          f"state_dict of arrays; the file holds {found}")


def check_optimizer_state(param_groups, sd):
    """Raise ``CheckpointError`` unless the saved optimizer state ``sd`` has the groups of
    ``param_groups`` (same parameter names, in order) and moments shaped like their
    parameters. Works for torch and Jittor groups (``names`` and ``params`` lists)."""
    saved_groups = sd["param_groups"]
    if len(saved_groups) != len(param_groups):
        raise CheckpointError(f"optimizer state has {len(saved_groups)} parameter groups, "
                              f"the model's optimizer {len(param_groups)}")
    for i, (group, saved) in enumerate(zip(param_groups, saved_groups)):
        if list(group["names"]) != list(saved["names"]):
            differ = sorted(set(group["names"]) ^ set(saved["names"]))
            raise CheckpointError(f"optimizer group {i} does not match the model's parameters "
                                  f"(names in one only, e.g. {differ[:3]}; or a different order)")
    shapes = {n: tuple(p.shape) for g in param_groups for n, p in zip(g["names"], g["params"])}
    for name, s in sd["state"].items():
        if name not in shapes or tuple(getattr(s["exp_avg"], "shape", ())) != shapes[name]:
            raise CheckpointError(f"optimizer moments of {name!r} do not fit the model's parameter")


def check_state_shapes(model_shapes, state_shapes, what="checkpoint"):
    """Compare ``{key: shape}`` maps; return a message naming differences, or None."""
    missing = [k for k in model_shapes if k not in state_shapes]
    unexpected = [k for k in state_shapes if k not in model_shapes]
    mismatched = [(k, model_shapes[k], state_shapes[k]) for k in model_shapes
                  if k in state_shapes and tuple(model_shapes[k]) != tuple(state_shapes[k])]
    if not (missing or unexpected or mismatched):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if mismatched:
        parts.append(f"{len(mismatched)} mis-shaped (e.g. {[f'{k}: model {a} vs {what} {b}' for k, a, b in mismatched[:3]]})")
    return f"{what} does not fit this model (another architecture or config?): " + "; ".join(parts)
