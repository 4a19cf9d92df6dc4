"""Framework-neutral checkpoint files: a pickled dict of NumPy arrays and plain Python.

Both twins write this format, so a checkpoint written by one framework resumes in
the other. Writes are atomic (temporary file, fsync, rename): a crash mid-save never
destroys the previous file. Reads name the problem: a missing, truncated or foreign file.
"""
import os
import pickle
import tempfile

FORMAT = "rtdetr-parity-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the reason."""


def save_atomic(obj, path):
    """Pickle ``obj`` to ``path`` atomically."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_checkpoint(path, payload):
    """Write a training checkpoint: ``payload`` plus the format marker."""
    save_atomic({"format": FORMAT, "version": VERSION, **payload}, path)


def read_checkpoint(path):
    """Read a checkpoint written by ``write_checkpoint``; fail with a clear reason."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f)
    except (EOFError, pickle.UnpicklingError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file (for official .pth weights use the model-weights loader)")
    return obj


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
