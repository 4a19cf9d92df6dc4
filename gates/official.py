"""The official-size gate: ``configs/rtdetr/rtdetr_r18vd_6x_coco.yml`` trained in both
frameworks from the same initial weights on the same batches.

The config is used as published (hidden_dim 256, 300 queries, 100 denoising queries,
80 classes) except for what a short CPU run on the synthetic set needs: no
pretrained backbone download, no multi-scale, a reduced input size and a short LR
warm-up. PyTorch draws the initial weights; Jittor loads them. Both engines are
seeded alike, so they draw the same denoising noise, and both train on one list of
batches drawn once. Jittor's kernel loads and compiles are counted per step.
"""
import os
import time

import numpy as np

from .checks import check, verdict
from .progress import track

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_CONFIG = os.path.join(ROOT, "configs", "rtdetr", "rtdetr_r18vd_6x_coco.yml")


def official_overrides(size, warmup_steps):
    return {"PResNet": {"pretrained": False}, "RTDETR": {"multi_scale": None},
            "HybridEncoder": {"eval_spatial_size": [size, size]},
            "RTDETRTransformer": {"eval_spatial_size": [size, size]},
            "lr_warmup_scheduler": {"warmup_duration": warmup_steps}}


def draw_batches(cfg, data, size, batch_size, steps, shuffle=True):
    """The first ``steps`` training batches of the seeded loader, as NumPy."""
    from rtdetr_common.data import DataLoader
    from rtdetr_common.loops import make_dataset
    dataset = make_dataset(cfg, data, "train", size, cfg["num_classes"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=True, seed=0)
    batches = []
    while len(batches) < steps:
        batches.extend(loader)
    return batches[:steps]


class JittorKernelCounter:
    """Jittor kernels this process loaded, and of those the ones compiled while it ran.

    Jittor keeps each compiled kernel as a shared object under
    ``jt.flags.cache_path``/jit and maps it into the process on first use, so a new
    mapping is a kernel this process had not needed before (a new shape or op), and a
    new mapping whose file is younger than the count's start was compiled now rather
    than read from the cache."""

    def __init__(self):
        from rtdetr_jittor._env import jt
        self.jit_dir = os.path.join(jt.flags.cache_path, "jit")
        self.seen = self.mapped()

    def mapped(self):
        with open("/proc/self/maps") as f:
            return {line.split()[-1] for line in f if self.jit_dir in line and line.rstrip().endswith(".so")}

    def since_last(self, started):
        """``(loaded, compiled)`` kernels since the previous call; ``started``: when the step began."""
        new = self.mapped() - self.seen
        self.seen |= new
        return len(new), sum(1 for path in new if os.path.getmtime(path) >= started)


def train_curve(engine, batches, label):
    """Train ``engine`` on ``batches``, then step once more on the first batch with the
    first step's denoising noise: that step's loss, against the first, is what training
    changed (single steps differ several-fold by batch). Returns the losses, seconds per
    step and, for Jittor, ``(loaded, compiled)`` kernels per step."""
    counter = JittorKernelCounter() if engine.framework == "jittor" else None
    track(engine, label, len(batches) + 1, len(batches) + 1, every=5)
    first_noise = engine.training_rng.bit_generator.state
    losses, seconds, kernels = [], [], []
    for i, (images, targets) in enumerate(batches + batches[:1]):
        if i == len(batches):
            engine.training_rng.bit_generator.state = first_noise
        t0 = time.time()
        losses.append(engine.train_step(images, targets)["loss"])
        seconds.append(time.time() - t0)
        if counter:
            kernels.append(counter.since_last(t0))
    return losses, seconds, kernels


def curve_result(losses, seconds, other_losses, thresholds):
    """Verdict on one framework's curve (the last entry: the first batch re-measured):
    finite, falling, within the band of the other framework's curve."""
    drop = 1 - losses[-1] / losses[0]
    gap = float(np.max(np.abs(np.array(losses) - other_losses) / np.abs(other_losses)))
    result = {"steps": len(losses) - 1, "losses": [round(v, 4) for v in losses[:-1]],
              "first_batch_loss": [round(losses[0], 4), round(losses[-1], 4)],
              "loss_drop": round(drop, 4), "max_rel_gap_to_other": round(gap, 6),
              "seconds_per_step": round(float(np.median(seconds[1:] or seconds)), 2),
              "first_step_seconds": round(seconds[0], 1)}
    return verdict(result, [check("all_losses_finite", bool(np.all(np.isfinite(losses))), "==", True),
                            check("loss_drop", drop, ">=", thresholds["loss_drop"]),
                            check("max_rel_gap_to_other", gap, "<=", thresholds["band"])])


def gate_official(settings, data):
    """Train both frameworks; ``{framework: result}``."""
    from reference_pytorch.engine import Engine as TorchEngine
    from rtdetr_jittor.engine import Engine as JittorEngine
    from .thresholds import OFFICIAL
    overrides = official_overrides(settings["input_size"], settings["warmup_steps"])
    engines = {"pytorch": TorchEngine(OFFICIAL_CONFIG, overrides, seed=0)}
    engines["jittor"] = JittorEngine(OFFICIAL_CONFIG, overrides, seed=0)
    engines["jittor"].load_weights(engines["pytorch"].model_state())
    batches = draw_batches(engines["pytorch"].cfg, data, settings["input_size"], settings["batch_size"],
                           settings["steps"])
    curves = {}
    for fw, engine in engines.items():
        engine.seed_everything(0)
        engine.setup_training()
        curves[fw] = train_curve(engine, batches, f"{fw}/official")
    thresholds = {k: t.value for k, t in OFFICIAL.items()}
    results = {}
    for fw, (losses, seconds, kernels) in curves.items():
        other_losses = np.array(curves["jittor" if fw == "pytorch" else "pytorch"][0])
        results[fw] = curve_result(losses, seconds, other_losses, thresholds)
        results[fw]["config"] = os.path.relpath(OFFICIAL_CONFIG, ROOT)
        if kernels:
            add_kernel_counts(results[fw], kernels, thresholds["late_kernels"])
    return results


def add_kernel_counts(result, kernels, late_limit):
    """Jittor's kernels per step in ``result``, and the check that they settle after step 2."""
    result["kernels_loaded_per_step"] = [k[0] for k in kernels]
    result["kernels_compiled_per_step"] = [k[1] for k in kernels]
    late = sum(k[0] for k in kernels[2:])
    result["checks"].append(check("kernels_loaded_after_step_2", late, "<=", late_limit))
    verdict(result, result["checks"])
