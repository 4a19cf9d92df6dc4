"""The one place that imports Jittor.

Importing Jittor offline on these machines needs care: an ``nvcc`` exists without a
CUDA runtime (so ``nvcc_path`` must be empty), and Jittor downloads oneDNN unless it
finds it laid out under ``~/.cache/jittor/mkl`` (``scripts/setup_onednn.sh`` does
that from Debian's ``libdnnl-dev``). Jittor also reseeds NumPy and ``random`` from the
clock on import; this module restores their states so importing the project seeds
nothing behind the user's back, and it restores the default SIGCHLD handling that
Jittor replaces (see ``_restore_sigchld``). When OpenMPI's ``mpicc`` is installed
(``scripts/setup_mpi.sh``) Jittor compiles its MPI ops on import, offline and once
(cached); under ``mpirun`` it then sets ``jt.in_mpi``, ``jt.rank`` and ``jt.world_size``
(``rtdetr_jittor.distributed``). Every Jittor import in the project goes through here::

    from rtdetr_jittor._env import jt
"""
import os
import random
import signal
import threading

import numpy as np

ONEDNN_MARKER = os.path.join(
    os.environ.get("JITTOR_HOME", os.path.expanduser("~")),
    ".cache", "jittor", "mkl", "dnnl_lnx_2.2.0_cpu_gomp", "lib", "libmkldnn.so")


def _set_defaults():
    os.environ.setdefault("nvcc_path", "")
    os.environ.setdefault("log_silent", "1")
    if "use_mkl" not in os.environ:
        os.environ["use_mkl"] = "1" if os.path.exists(ONEDNN_MARKER) else "0"


def _import_jittor():
    _set_defaults()
    np_state = np.random.get_state()
    py_state = random.getstate()
    import jittor
    np.random.set_state(np_state)
    random.setstate(py_state)
    jittor.flags.use_cuda = 0
    _restore_sigchld()
    return jittor


def _restore_sigchld():
    """Jittor handles SIGCHLD itself and ends the whole process when any child process
    dies by a signal (it assumes one of its data-loader workers ran out of memory), so a
    program that kills a subprocess of its own would die with it. The project uses no
    Jittor workers: restore the default handling."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


jt = _import_jittor()


def backend_info():
    """Which Jittor backend is active: oneDNN (MKL ops) and CUDA on or off."""
    from jittor import compile_extern
    return {
        "jittor_version": jt.__version__,
        "onednn": compile_extern.mkl_ops is not None,
        "cuda": bool(jt.flags.use_cuda),
        "use_mkl_env": os.environ.get("use_mkl"),
    }


if __name__ == "__main__":
    print(backend_info())
