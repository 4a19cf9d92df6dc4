"""One benchmark configuration (framework x model x phase x oneDNN) in its own process.

``python -m bench.worker SPEC_JSON`` imports one framework, builds the model, loads
the shared weights (or, for the reference, writes them), runs the first iteration
(timed on its own: with a cold Jittor cache this is where the compiling happens)
and the warm-up, then answers the orchestrator on stdin/stdout, one JSON line each:
``step`` runs one timed iteration (wall and process CPU milliseconds), ``finish``
reports peak resident memory and exits.
Protocol lines go to a private copy of stdout; everything the frameworks print goes
to stderr, so nothing can corrupt the protocol.

SPEC keys: framework ('pytorch'|'jittor'), model, size, phase ('eval'|'deploy'|'train';
deploy: eval after the official ``model.deploy()``),
batch, threads, warmup, weights (an .npz path: read, or written by the reference
when absent), outputs (an .npz path for the eval outputs / first-step losses).
"""
import json
import os
import resource
import sys
import time
import traceback

import numpy as np

from bench import workload


def peak_rss_mb():
    """Peak resident set size of this process (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Runner:
    """Shared set-up: engine, weights, inputs; subclasses give the framework specifics."""

    def __init__(self, spec):
        self.spec = spec
        t0 = time.perf_counter()
        self.info = self.import_framework()
        self.info["import_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.engine = self.engine_class()(workload.config_path(spec["model"]), workload.overrides(spec["size"]))
        self.engine.seed_everything(0)
        self.load_or_save_weights(spec.get("weights"))
        num_classes = int(self.engine.cfg.get("num_classes", 80))
        self.images = workload.images(spec["batch"], spec["size"])
        self.targets = workload.targets(spec["batch"], num_classes)
        if spec["phase"] == "train":
            self.engine.setup_training()
        else:
            self.prepare_eval()
        self.info["build_s"] = time.perf_counter() - t0
        self.last = None

    def load_or_save_weights(self, path):
        if not path:
            return
        if os.path.exists(path):
            with np.load(path) as z:
                self.engine.load_weights({k: z[k] for k in z.files})
        elif self.spec["framework"] == "pytorch":
            np.savez(path + ".tmp.npz", **self.engine.model_state())
            os.replace(path + ".tmp.npz", path)

    def step(self):
        """One timed iteration; returns wall milliseconds (``self.last_cpu_ms``: CPU time of
        the process, all its threads, over the same iteration)."""
        c0, t0 = time.process_time(), time.perf_counter()
        self.last = self.eval_step() if self.spec["phase"] != "train" else self.engine.train_step(self.images, self.targets)
        t1, c1 = time.perf_counter(), time.process_time()
        self.last_cpu_ms = (c1 - c0) * 1000.0
        return (t1 - t0) * 1000.0

    def save_outputs(self, path, first):
        if not path:
            return
        if self.spec["phase"] != "train":
            np.savez(path, **self.last)
        else:
            np.savez(path, loss=np.float64(first["loss"]),
                     **{f"loss_{k}": np.float64(v) for k, v in first["losses"].items()})


class TorchRunner(_Runner):
    def import_framework(self):
        import torch
        torch.set_num_threads(self.spec["threads"])
        self.torch = torch
        return {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
                "mkldnn": bool(torch.backends.mkldnn.is_available())}

    def engine_class(self):
        from reference_pytorch.engine import Engine
        return Engine

    def prepare_eval(self):
        self.model = self.engine.model.eval()
        if self.spec["phase"] == "deploy":
            self.model.deploy()

    def eval_step(self):
        with self.torch.no_grad():
            out = self.model(self.torch.from_numpy(self.images))
            return {"pred_logits": out["pred_logits"].numpy(), "pred_boxes": out["pred_boxes"].numpy()}


class JittorRunner(_Runner):
    def import_framework(self):
        from rtdetr_jittor._env import backend_info, jt
        self.jt = jt
        info = backend_info()
        info["jittor_cache"] = os.path.join(os.path.expanduser("~"), ".cache", "jittor")
        return info

    def engine_class(self):
        from rtdetr_jittor.engine import Engine
        return Engine

    def prepare_eval(self):
        self.model = self.engine.model
        self.model.eval()
        if self.spec["phase"] == "deploy":
            self.model.deploy()

    def eval_step(self):
        jt = self.jt
        with jt.no_grad():
            out = self.model(jt.array(self.images))
            return {"pred_logits": out["pred_logits"].numpy(), "pred_boxes": out["pred_boxes"].numpy()}


def _serve(spec, send):
    runner = (TorchRunner if spec["framework"] == "pytorch" else JittorRunner)(spec)
    first_ms = runner.step()
    first = runner.last
    warm = [runner.step() for _ in range(int(spec.get("warmup", 1)))]
    runner.save_outputs(spec.get("outputs"), first)
    send({"event": "ready", "first_ms": first_ms, "warmup_ms": warm, **runner.info})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            ms = runner.step()
            send({"event": "step", "ms": ms, "cpu_ms": runner.last_cpu_ms})
        elif cmd == "finish":
            break
    send({"event": "done", "peak_rss_mb": peak_rss_mb()})


def main(argv=None):
    spec = json.loads((argv or sys.argv[1:])[0])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # framework output (C and Python) goes to stderr
    sys.stdout = sys.stderr

    def send(msg):
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    try:
        _serve(spec, send)
    except BaseException as e:  # report any failure to the orchestrator, then exit non-zero
        send({"event": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
