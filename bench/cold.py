"""A fresh, empty Jittor compile cache for the cold-compile measurement.

Jittor keeps its compiled core and operators under ``$HOME/.cache/jittor``; a
temporary ``HOME`` therefore gives an empty cache. The oneDNN layout Jittor expects
lives there too, so ``scripts/setup_onednn.sh`` is run again with the new ``HOME``
(it only makes symlinks to Debian's libdnnl). ``JITTOR_HOME`` is removed from the
environment, since it would override ``HOME``.
"""
import os
import shutil
import subprocess
import tempfile

from bench.workload import ROOT

ONEDNN_LIB = os.path.join(".cache", "jittor", "mkl", "dnnl_lnx_2.2.0_cpu_gomp", "lib", "libmkldnn.so")


class FreshJittorHome:
    """Context manager: ``env`` is os.environ with HOME pointing at an empty directory
    that holds only the oneDNN layout; ``onednn`` says whether that layout exists."""

    def __init__(self, base_env=None, keep=False):
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.keep = keep
        self.home = None
        self.env = None
        self.onednn = False
        self.setup_log = ""

    def __enter__(self):
        self.home = tempfile.mkdtemp(prefix="rtdetr_bench_jittor_home_")
        env = dict(self.base_env)
        env.pop("JITTOR_HOME", None)
        env["HOME"] = self.home
        proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_onednn.sh")], env=env,
                              capture_output=True, text=True, cwd=ROOT)
        self.setup_log = (proc.stdout + proc.stderr).strip()
        self.onednn = os.path.exists(os.path.join(self.home, ONEDNN_LIB))
        self.env = env
        return self

    def __exit__(self, *exc):
        if not self.keep and self.home:
            shutil.rmtree(self.home, ignore_errors=True)
        return False
