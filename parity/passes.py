"""Running one model pass and recording it: eval forward + post-processing, or
training forward + criterion + backward, in one framework, through its backend.

Each pass starts from the pair's weights (training moves BatchNorm statistics), takes
its denoising noise and multi-scale size from NumPy generators seeded alike in both
frameworks, and records every module output, probe, loss term and gradient into a
:class:`parity.capture.Capture` (or straight to a sink such as
``parity.store.CaptureWriter``). Nothing here judges.
"""
import numpy as np

from rtdetr_common import probes
from rtdetr_common.noise import NumpyDenoisingNoise, NumpySizeSampler

from . import capture as cap


def perturb_one_ulp(images, seed=0):
    """Every pixel moved by one ulp of its dtype, up or down at random: the smallest
    change of the input the dtype can express, used to measure the reference's noise floor."""
    rng = np.random.default_rng(seed)
    direction = np.where(rng.random(images.shape) < 0.5, -np.inf, np.inf).astype(images.dtype)
    return np.nextafter(images, direction).astype(images.dtype)


def eval_pass(side, images, inputs_of=(), sink=None, orig_sizes=None):
    """Eval-mode forward and post-processing of ``side`` (a :class:`parity.run.Side`);
    ``orig_sizes``: (B, 2) [width, height] the post-processor scales boxes to (default:
    the input's own size)."""
    backend, built = side.backend, side.built
    sizes = (np.array([[images.shape[3], images.shape[2]]] * images.shape[0], images.dtype) if orig_sizes is None
             else np.asarray(orig_sizes, images.dtype).reshape(-1, 2))
    side.load_weights()
    model = backend.set_mode(built.model, False)

    def run():
        with backend.no_grad():
            out = model(backend.from_numpy(images))
            probes.record("output", {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]})
            built.postprocessor(out, backend.from_numpy(sizes))
    return cap.capture(model, run, backend, inputs_of, sink=sink)[1]


def train_pass(side, images, targets, noise_seed, with_grads, inputs_of=(), multi_scale=None, sink=None):
    """Training forward, criterion (``loss:`` records) and, with ``with_grads``, backward
    (``grad:`` records; a parameter the loss does not reach is a ``no-gradient`` record)."""
    backend, built = side.backend, side.built
    side.load_weights()
    model = backend.set_mode(built.model, True)
    model.decoder.denoising_noise = NumpyDenoisingNoise(noise_seed)
    model.size_sampler = NumpySizeSampler(noise_seed)
    model.multi_scale = list(multi_scale) if multi_scale else None
    extra = []

    def run():
        out = model(backend.from_numpy(images), backend.targets_from_numpy(targets))
        losses = built.criterion(out, backend.targets_from_numpy(targets))
        total = sum(losses.values())
        for k, v in losses.items():
            extra.append((f"loss:{k}", backend.to_numpy(v).reshape(())))
        extra.append(("loss:total", backend.to_numpy(total).reshape(())))
        if with_grads:
            extra.extend((f"grad:{n}", g) for n, g in backend.named_gradients(total, model))

    capture = cap.capture(model, run, backend, inputs_of, sink=sink)[1]
    for name, value in extra:
        if value is None:
            capture.records.append(cap.Record(name, np.array(np.nan, np.float32), name, "no-gradient"))
        else:
            capture.records.append(cap.Record(name, value, name, "extra"))
    return capture
