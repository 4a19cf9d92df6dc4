"""The orchestrator's handle on one ``bench.worker`` process (JSON lines over pipes)."""
import json
import os
import subprocess
import sys

from bench.workload import ROOT


class WorkerFailed(RuntimeError):
    """A worker reported an error or died; the message ends with its log's tail."""


class Worker:
    """Start ``python -m bench.worker SPEC``; ``ready()``, ``step()``, ``finish()``."""

    def __init__(self, spec, env, log_path, repeats):
        self.spec = spec
        self.repeats = repeats
        self.times_ms = []
        self.cpu_times_ms = []
        self.log_path = log_path
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=env, cwd=ROOT, text=True, bufsize=1)

    @property
    def remaining(self):
        return self.repeats - len(self.times_ms)

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise WorkerFailed(f"worker exited with status {self.proc.returncode}\n{self.log_tail()}")
        msg = json.loads(line)
        if msg.get("event") == "error":
            raise WorkerFailed(f"{msg['error']}\n{msg.get('traceback', '')}")
        return msg

    def _send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def ready(self):
        """Wait for set-up, the first iteration and the warm-up; returns the worker's info."""
        return self._read()

    def step(self):
        self._send("step")
        msg = self._read()
        self.times_ms.append(msg["ms"])
        self.cpu_times_ms.append(msg.get("cpu_ms"))
        return msg["ms"]

    def finish(self):
        self._send("finish")
        msg = self._read()
        self.close()
        return msg

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def log_tail(self, n=30):
        self._log.flush()
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""
