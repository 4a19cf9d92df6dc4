"""Importing Jittor through ``rtdetr_jittor._env`` leaves the process's own behaviour
alone: a subprocess killed by a signal does not take the importing process down
(Jittor's SIGCHLD handler would end it)."""
import signal
import subprocess
import sys


def test_a_killed_subprocess_does_not_end_the_process():
    from rtdetr_jittor._env import jt  # noqa: F401  (installs Jittor's handlers, then ours)
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    assert child.wait() == -signal.SIGKILL  # still here to see it
