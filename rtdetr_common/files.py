"""Writing files so that a reader, or a run killed mid-write, never sees half of one."""
import os
import tempfile


def write_atomic(path, write, binary=False):
    """Call ``write(handle)`` on a temporary file in ``path``'s folder, flush it to disk,
    then rename it to ``path``; the temporary file is removed if anything fails."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(text))
