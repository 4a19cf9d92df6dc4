"""Writing files so that a reader, or a run killed mid-write, never sees half of one."""
import os
import tempfile


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder, flushed to
    disk, and a rename."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
