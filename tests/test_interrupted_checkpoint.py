"""A training run killed (SIGKILL) in the middle of writing a checkpoint resumes from
the last complete one, bit for bit like an uninterrupted run.

The run is a child process (this file run as a script): the tiny config on a 4-image
set, 3 epochs of 2 steps, a checkpoint after each epoch. Its second checkpoint write
stops half-way through the bytes (the temporary file is on disk) and waits; the test
kills it with SIGKILL there. Then ``last.ckpt`` must be the complete step-2 file, and
resuming it in this process to step 6 must give the same model, EMA and Adam state as
6 uninterrupted steps. The PyTorch twin is used: the write path (``checkpoint_io``) is
shared, and a Jittor child would first spend its start-up loading compiled kernels.
"""
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAUSED = "paused-mid-write"
EPOCHS = 3


def _read(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _flat(ckpt):
    """Every array and counter of a checkpoint that resuming must reproduce."""
    arrays = {f"model.{k}": v for k, v in ckpt["model"].items()}
    arrays.update({f"ema.{k}": v for k, v in ckpt["ema"]["module"].items()})
    for name, s in ckpt["optimizer"]["state"].items():
        arrays.update({f"adam.{name}.{m}": s[m] for m in ("exp_avg", "exp_avg_sq")})
    counters = (ckpt["step"], ckpt["epoch"], ckpt["ema"]["updates"], ckpt["lr_schedule"], ckpt["extra"]["loader"],
                ckpt["extra"]["training_rng"])
    return arrays, counters


def _train(out, resume=None):
    from rtdetr_common.loops import train
    from tests.tiny import CFG, TINY_OVERRIDES, engine_class, train_args
    data = os.path.join(os.path.dirname(out), "data")
    train(engine_class("pytorch")(CFG, TINY_OVERRIDES, seed=0), train_args(data, out, EPOCHS, resume=resume))


def _pause_in_second_write(out):
    """In the child: the second checkpoint write stops after half its bytes and waits."""
    from rtdetr_common import checkpoint_io
    real_dump, calls = checkpoint_io.pickle.dump, []

    def dump(obj, f, protocol=None):
        calls.append(1)
        if len(calls) < 2:
            return real_dump(obj, f, protocol=protocol)
        data = pickle.dumps(obj, protocol=protocol)
        f.write(data[:len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        open(os.path.join(out, PAUSED), "w").close()
        time.sleep(600)

    checkpoint_io.pickle.dump = dump


def test_run_killed_while_writing_a_checkpoint_resumes_bit_exact(tmp_path):
    from tests.tiny import make_tiny_coco
    make_tiny_coco(tmp_path / "data")
    killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
    os.makedirs(killed)
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), killed], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(killed, PAUSED)):
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the child never reached its second checkpoint write"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    partial = [n for n in os.listdir(killed) if n.startswith(".tmp-")]
    assert len(partial) == 1  # killed mid-write: the half-written temporary file is there
    last = os.path.join(killed, "last.ckpt")
    assert _read(last)["step"] == 2

    _train(killed, resume=last)
    _train(straight)
    (got, got_counters), (want, want_counters) = _flat(_read(last)), _flat(_read(os.path.join(straight, "last.ckpt")))
    assert got_counters == want_counters and got_counters[0] == 2 * EPOCHS
    assert sorted(got) == sorted(want)
    different = [k for k in want if not (got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]))]
    assert not different, different[:5]


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    _pause_in_second_write(sys.argv[1])
    _train(sys.argv[1])
