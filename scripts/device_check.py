"""Parity checks on a CUDA machine (run by hand where one is lent; CI has none).

1. The PyTorch reference on CUDA against itself on the CPU, r18vd with realistic
   random weights: eval outputs in float32 (TF32 off) and float64, and a training
   forward and backward in float64 (every loss term and gradient).
2. The Jittor twin on CUDA (``jt.flags.use_cuda = 1``, nvcc from the machine) against
   the reference on the CPU: eval outputs in float32. The ``rtdetr_jittor.compat``
   kernels give Jittor CPU sources only (``jt.code(cpu_src=...)``, no CUDA source).

Prints one line per figure and a JSON summary last; a part that cannot run says why.

    python scripts/device_check.py [--size 320] [--out DIR]
"""
import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = os.path.join(ROOT, "configs", "rtdetr", "rtdetr_r18vd_6x_coco.yml")


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (np.abs(a).max() or 1.0))


def reference_forward(model, images, device, targets=None, criterion=None):
    import torch
    model = model.to(device)
    x = torch.from_numpy(images).to(device)
    if targets is None:
        model.eval()
        with torch.no_grad():
            out = model(x)
        return {k: out[k].cpu().numpy() for k in ("pred_logits", "pred_boxes")}
    model.train()
    tgt = [{k: torch.from_numpy(v).to(device) for k, v in t.items()} for t in targets]
    losses = criterion(model(x, tgt), tgt)
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    out = {f"loss:{k}": v.detach().cpu().numpy() for k, v in losses.items()}
    out.update({f"grad:{n}": p.grad.cpu().numpy() for n, p in model.named_parameters() if p.grad is not None})
    return out


def reference_cuda_vs_cpu(size, summary):
    import torch
    import reference_pytorch
    from parity.run import make_batch
    from parity.weights import realistic_random_state, torch_shapes
    from reference_pytorch.checkpoint import load_model_state
    from rtdetr_common.noise import NumpyDenoisingNoise
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    built = reference_pytorch.build(CONFIG)
    built.model.multi_scale = None  # the same input size on both devices
    state = realistic_random_state(torch_shapes(built.model), 0)
    images, targets = make_batch(0, 2, size, 80, [3, 5])
    for dtype in ("float32", "float64"):
        built.model.to(getattr(torch, dtype))
        load_model_state(built.model, state)
        outs = {dev: reference_forward(built.model, images.astype(dtype), dev) for dev in ("cpu", "cuda")}
        for k in outs["cpu"]:
            summary[f"reference eval {dtype} {k} cuda-vs-cpu max rel"] = rel(outs["cpu"][k], outs["cuda"][k])
    built.model.double()
    results = {}
    for dev in ("cpu", "cuda"):
        load_model_state(built.model, state)
        built.model.decoder.denoising_noise = NumpyDenoisingNoise(1)
        results[dev] = reference_forward(built.model, images.astype("float64"), dev,
                                         [{k: v.astype("float64") if v.dtype.kind == "f" else v for k, v in t.items()}
                                          for t in targets], built.criterion)
    losses = [rel(results["cpu"][k], results["cuda"][k]) for k in results["cpu"] if k.startswith("loss:")]
    # gradients zero in exact arithmetic (a bias before a train-mode norm) hold only
    # rounding noise, ~1e-16: their relative difference says nothing
    grads = [rel(results["cpu"][k], results["cuda"][k]) for k in results["cpu"]
             if k.startswith("grad:") and np.abs(results["cpu"][k]).max() > 1e-10]
    summary["reference train float64 losses cuda-vs-cpu worst rel"] = max(losses)
    summary["reference train float64 gradients cuda-vs-cpu worst rel (of scale)"] = max(grads)
    summary["reference train float64 compared"] = f"{len(losses)} losses, {len(grads)} gradients"


def jittor_cuda_vs_reference(size, summary):
    import torch
    os.environ["nvcc_path"] = os.environ.get("nvcc_path") or "/usr/local/cuda/bin/nvcc"
    for library in ("use_nccl", "use_cutt"):  # Jittor would download their sources
        os.environ.setdefault(library, "0")
    from parity.run import build_pair, make_batch
    from rtdetr_jittor.backend import from_numpy
    from rtdetr_jittor._env import jt
    jt.flags.use_cuda = 1
    pair = build_pair(CONFIG)
    images, _ = make_batch(0, 1, size, 80)
    pair.ref.model.eval()
    with torch.no_grad():
        ref = pair.ref.model(torch.from_numpy(images))
    pair.jt.model.eval()
    t0 = time.time()
    with jt.no_grad():
        out = pair.jt.model(from_numpy(images))
        got = {k: out[k].numpy() for k in ("pred_logits", "pred_boxes")}
    summary["jittor cuda first eval seconds"] = round(time.time() - t0, 1)
    for k, v in got.items():
        summary[f"jittor cuda vs reference cpu eval float32 {k} max abs"] = float(np.abs(ref[k].numpy() - v).max())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    summary = {}
    for name, part in (("reference", reference_cuda_vs_cpu), ("jittor", jittor_cuda_vs_reference)):
        t0 = time.time()
        try:
            part(args.size, summary)
            summary[f"{name} part seconds"] = round(time.time() - t0, 1)
        except Exception as e:  # report and go on: each part stands alone
            summary[f"{name} part error"] = f"{type(e).__name__}: {str(e)[:400]}"
            traceback.print_exc()
        print(json.dumps(summary, indent=1), flush=True)
    with open(os.path.join(args.out, "device_check.json"), "w") as handle:
        json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()
