"""Whole-model comparisons: build the pair, run every pass, judge the saved captures.

``build_pair`` builds both twins from one config with identical weights (realistic
random values by default, see ``parity.weights``); ``compare`` feeds both identical
inputs, runs each pass through ``parity.passes`` (every module output, probe, loss and
gradient recorded), saves each capture to disk as soon as it is complete
(``parity.store``), and judges the saved captures with ``parity.judge`` under the
tolerance registry of the pair's dtype (float64: the logic verdict; float32: the
numerics verdict against the reference's per-element noise floor). Randomness
(denoising noise, the multi-scale size) comes from NumPy generators with one seed
injected into both models. Discrete decisions (top-k query selection, matcher
assignment) can be taken from the reference and forced on the Jittor side, so that one
tie flipped does not hide everything downstream; the twin's *own* decision is recorded
before it is replaced (``probes.decide``) and judged tie-aware, so a wrong decision
fails even when forcing is on. Framework specifics live in each twin's ``backend``.
"""
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

import reference_pytorch.backend as reference_backend
import rtdetr_jittor.backend as jittor_backend
from rtdetr_common import probes
from rtdetr_common.errors import InputError
from rtdetr_common.validation import validate_images, validate_targets

from . import store
from .decisions import forced_decisions
from .judge import judge_captures, noise_floors
from .passes import eval_pass, perturb_one_ulp, train_pass
from .tolerances import load_registry
from .weights import realistic_random_state, torch_shapes


@dataclass
class Side:
    """One framework's half of a pair: its backend, its built model and the weights it holds."""
    backend: object
    built: object
    weights: dict = field(repr=False)

    def load_weights(self):
        """Load copies: a framework may keep the array's memory and update it in place."""
        self.backend.load_model_state(self.built.model, {k: np.array(v, copy=True) for k, v in self.weights.items()})


@dataclass
class Pair:
    """Both twins built from one config, holding the same weights."""
    config: str
    ref: object
    jt: object
    weights: dict = field(repr=False)
    # Jittor-side values that differ from ``weights``: a planted bug, or a converted file under test
    jittor_weight_edits: dict = field(default_factory=dict, repr=False)
    dtype: str = "float32"
    overrides: dict = None
    weights_kind: str = "random"  # "trained" for weights read from a file: selects the tolerance rules

    def registry(self):
        """The tolerance registry of this pair's dtype and kind of weights."""
        return load_registry(dtype=self.dtype, weights=self.weights_kind)

    @property
    def reference(self):
        return Side(reference_backend, self.ref, self.weights)

    @property
    def twin(self):
        return Side(jittor_backend, self.jt, self.jittor_weights())

    def fresh_reference(self):
        """Another reference side built from the same config, holding the pair's weights."""
        built = reference_backend.build(self.config, self.overrides)
        if self.dtype == "float64":
            reference_backend.to_float64(built.model)
        side = Side(reference_backend, built, self.weights)
        side.load_weights()
        return side

    def cast_inputs(self, images, targets=None):
        """Images and target boxes in the pair's float dtype (labels stay int64)."""
        images = images.astype(self.dtype)
        if targets is not None:
            targets = [{k: v.astype(self.dtype) if v.dtype.kind == "f" else v for k, v in t.items()}
                       for t in targets]
        return images, targets

    def jittor_weights(self):
        return {**self.weights, **self.jittor_weight_edits}


def build_pair(config, overrides=None, weight_seed=0, random_weights=True, dtype="float32", weights=None):
    """``dtype="float64"`` runs both twins in double precision: float32 rounding then no
    longer decides which side of a ReLU or sampling-cell kink a value falls on, so
    whole-model gradients can be compared to the issue's 1e-4 relative target.
    ``weights``: a state_dict of NumPy arrays (trained weights) loaded into both, with
    strict key and shape checks (``StateDictError``), instead of random ones."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    ref = reference_backend.build(config, overrides)
    jtb = jittor_backend.build(config, overrides)
    if dtype == "float64":
        reference_backend.to_float64(ref.model)
        jittor_backend.to_float64(jtb.model)
    if weights is not None:
        state = {name: np.asarray(value) for name, value in weights.items()}
    elif random_weights:
        state = realistic_random_state(torch_shapes(ref.model), weight_seed)
    else:
        state = reference_backend.model_state_numpy(ref.model)
    pair = Pair(config, ref, jtb, state, dtype=dtype, overrides=overrides,
                weights_kind="trained" if weights is not None else "random")
    pair.reference.load_weights()
    pair.twin.load_weights()
    return pair


def image_size(size):
    """``(height, width)`` from an int (square), a pair, or the command line's "N" / "H,W"."""
    if isinstance(size, str):
        size = [int(v) for v in size.split(",")]
        size = size[0] if len(size) == 1 else size
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = (int(v) for v in size)
    return height, width


def make_batch(seed, batch, size, num_classes, gt_counts=None):
    """Images in [0, 1] of ``size`` (an int, or ``(height, width)``) and targets (labels
    int64, boxes cxcywh in (0, 1)) from one seed."""
    rng = np.random.default_rng(seed)
    height, width = image_size(size)
    images = rng.random((batch, 3, height, width), dtype=np.float32)
    if gt_counts is None:
        gt_counts = [int(c) for c in rng.integers(1, 6, batch)]
    targets = []
    for n in gt_counts:
        wh = rng.uniform(0.05, 0.5, (n, 2))
        cxcy = rng.uniform(wh / 2, 1 - wh / 2)
        targets.append({"labels": rng.integers(0, num_classes, n).astype(np.int64),
                        "boxes": np.concatenate([cxcy, wh], 1).astype(np.float32)})
    return images, targets


# How many one-ulp perturbations of the input measure the reference's noise floor:
# where an output or gradient sits near a kink (ReLU at 0, a sampling point crossing a
# pixel edge) its sensitivity is heavy-tailed, and one sample underestimates it.
FLOOR_RUNS = 3


def _pass(side, mode, images, targets, noise_seed, multi_scale, inputs_of=(), with_grads=True, sink=None,
          orig_sizes=None):
    if mode == "eval":
        return eval_pass(side, images, inputs_of, sink=sink, orig_sizes=orig_sizes)
    if mode == "train":
        return train_pass(side, images, targets, noise_seed, with_grads, inputs_of, multi_scale, sink=sink)
    raise ValueError(f"unknown mode {mode!r}")


def run_passes(pair, mode, images, targets, directory, noise_seed=0, force_topk=True, force_matcher=False,
               measure_floor=False, multi_scale=None, orig_sizes=None):
    """Run the reference, then the twin with the reference's decisions forced (its own
    recorded first), then, with ``measure_floor``, ``FLOOR_RUNS`` reference runs on
    one-ulp-perturbed inputs with the reference's decisions forced, whose element-wise
    distance from the reference is each tensor's noise floor. Every record streams to
    ``directory`` as it is made (no capture is held in memory); returns the run's
    description for ``run.json``. ``orig_sizes`` (eval): the [width, height] per image
    the post-processor scales boxes to (default: the input's own size)."""
    def one(side, imgs, forced, name):
        with probes.forcing(forced), store.CaptureWriter(directory, name) as sink:
            _pass(side, mode, imgs, targets, noise_seed, multi_scale, sink=sink, orig_sizes=orig_sizes)
        return store.load_capture(directory, name)

    ref_cap = one(pair.reference, images, {}, "reference")
    one(pair.twin, images, forced_decisions(ref_cap, jittor_backend, force_topk, force_matcher,
                                            pair.dtype == "float64"), "jittor")
    runs = [one(pair.reference, perturb_one_ulp(images, seed),
                forced_decisions(ref_cap, reference_backend, True, mode == "train"), f"perturbed{seed}")
            for seed in range(FLOOR_RUNS if measure_floor else 0)]
    if measure_floor:
        store.save_floors(directory, "floor", noise_floors(ref_cap, runs))
        for seed in range(FLOOR_RUNS):
            store.remove_capture(directory, f"perturbed{seed}")
    return {"passes": [{"reference": "reference", "twin": "jittor", "floor": "floor" if measure_floor else None}]}


def judge_run(directory, registry, info=None):
    """Judge the passes saved under ``directory`` (see :func:`run_passes`, ``steps.run_steps``)."""
    info = info or store.read_run(directory)
    results = []
    for p in info["passes"]:
        floors = store.StoredFloors(directory, p["floor"]) if p.get("floor") else None
        results.extend(judge_captures(store.load_capture(directory, p["reference"]),
                                      store.load_capture(directory, p["twin"]), registry, floors))
    return results


def own_eval_pass(pair, images, orig_sizes=None):
    """The Jittor twin's eval forward and post-processing on its own decisions (nothing
    forced): the detections a Jittor user gets. Returns its capture (in memory)."""
    return eval_pass(pair.twin, pair.cast_inputs(images)[0], orig_sizes=orig_sizes)


def save_first_divergence(pair, mode, images, targets, noise_seed, ref_cap, results, out_dir, multi_scale=None):
    """Rerun the reference keeping the first diverging module's inputs, and save them
    with its weights for ``python -m parity rerun``. Returns ``{module: path}``."""
    first = next((r for r in results if r.verdict == "fail"), None)
    if first is None:
        return {}
    module = next((rec.module for rec in ref_cap.records if rec.name == first.name and rec.kind == "module"), None)
    if module is None:
        return {}
    images, targets = pair.cast_inputs(images, targets)
    with probes.forcing(forced_decisions(ref_cap, reference_backend, True, mode == "train")):
        rerun = _pass(pair.reference, mode, images, targets, noise_seed, multi_scale, inputs_of=(module,),
                      with_grads=False)
    if module not in rerun.inputs:
        return {}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"first_divergence_{module}.npz")
    weights = {f"w:{k[len(module) + 1:]}": v for k, v in pair.weights.items() if k.startswith(module + ".")}
    inputs = {f"in:{i}": a for i, a in enumerate(rerun.inputs[module])}
    np.savez(path, __module__=np.array(module), __config__=np.array(pair.config), **weights, **inputs)
    return {module: path}


def check_inputs(pair, images, targets=None):
    """Refuse what no comparison can judge, with the project's own errors (the ones the
    engines raise): non-finite images or weights, and targets outside the model's
    classes or not finite normalised cxcywh boxes."""
    validate_images(images)
    bad = [name for name, value in pair.jittor_weights().items()
           if np.asarray(value).dtype.kind == "f" and not np.isfinite(value).all()]
    if bad:
        raise InputError(f"weights hold non-finite values in {len(bad)} tensor(s), first {bad[0]}")
    if targets is not None:
        validate_targets(targets, pair.ref.cfg["num_classes"])


def compare(pair, mode, images, targets=None, noise_seed=0, force_topk=True, force_matcher=False,
            measure_floor=None, registry=None, multi_scale=None, directory=None, orig_sizes=None):
    """Run ``mode`` ('eval' or 'train') in both twins and judge it with the registry of the
    pair's dtype and kind of weights; returns the results. The reference's noise floor is
    measured for float32 pairs unless ``measure_floor`` says otherwise. The captures are
    saved under ``directory`` (kept, for ``python -m parity judge``), or a temporary one.
    ``orig_sizes`` (eval): the [width, height] per image the post-processor scales boxes to."""
    registry = registry or pair.registry()
    measure_floor = pair.dtype == "float32" if measure_floor is None else measure_floor
    images, targets = pair.cast_inputs(images, targets)
    check_inputs(pair, images, targets)
    with tempfile.TemporaryDirectory(prefix="parity-captures-") as tmp:
        directory = directory or tmp
        info = run_passes(pair, mode, images, targets, directory, noise_seed, force_topk, force_matcher,
                          measure_floor, multi_scale, orig_sizes)
        store.write_run(directory, {**info, "dtype": pair.dtype, "mode": mode, "config": pair.config,
                                    "weights": pair.weights_kind})
        return judge_run(directory, registry, info)
