"""Command lines that start N data-parallel processes of ``python -m MODULE ...``.

The reference runs under ``torchrun`` (``torch.distributed.run --standalone``: a free
port on this machine), the Jittor twin under OpenMPI's ``mpirun`` (``--oversubscribe``
so that more ranks than cores start, ``--bind-to none`` so that ranks are not pinned to
one core each, ``mpi_yield_when_idle`` so that a rank waiting in a collective yields its
core instead of spinning on it, ``--allow-run-as-root`` when run as root, and the
environment variables the ranks need exported). One rank is a plain ``python``. Used by the tests, the
parity harness and the gates; README ("Data-parallel training") shows the same commands.
"""
import os
import shutil
import sys

EXPORTED = ("PYTHONPATH", "HOME", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "JITTOR_HOME", "use_mkl")


def launcher(framework, ranks, python=None, env=None):
    """The command prefix that starts ``ranks`` processes of ``python`` (followed by
    ``-m MODULE ARGS``); ``framework``: ``pytorch``/``torch`` or ``jittor``; ``env``: the
    environment the launcher will run in (default: this process's)."""
    python = python or sys.executable
    if ranks == 1:
        return [python]
    if framework in ("pytorch", "torch"):
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    if framework != "jittor":
        raise ValueError(f"unknown framework {framework!r}")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise RuntimeError("mpirun not found: Jittor's data-parallel runs need OpenMPI (Debian: openmpi-bin, "
                           "libopenmpi-dev; `make setup` installs them)")
    as_root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    exported = [a for name in EXPORTED if name in (os.environ if env is None else env) for a in ("-x", name)]
    return [mpirun, *as_root, "--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1",
            "-np", str(ranks), *exported, python]
