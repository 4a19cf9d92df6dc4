"""Whole-model comparisons: eval forward, training forward + backward, optimizer steps.

``build_pair`` builds both twins from one config with identical weights (realistic
random values by default, see ``parity.weights``); ``compare`` feeds both identical
inputs, records every module output and probe in both frameworks, and judges every
tensor with the tolerance registry of the pair's dtype (float64: the logic verdict;
float32: the numerics verdict against the reference's per-element noise floor).
Randomness (denoising noise, the multi-scale size) comes from NumPy generators with
one seed injected into both models. Discrete decisions (top-k query selection,
matcher assignment) can be taken from the reference and forced on the Jittor side,
so that one tie flipped does not hide everything downstream; the twin's *own*
decision is recorded before it is replaced (``probes.decide``) and judged
tie-aware, so a wrong decision fails even when forcing is on.
"""
import fnmatch
import os
import re
from dataclasses import dataclass, field

import numpy as np

from rtdetr_common import probes
from rtdetr_common.errors import InputError
from rtdetr_common.validation import validate_images, validate_targets
from rtdetr_common.noise import NumpyDenoisingNoise, NumpySizeSampler

from . import capture as cap
from .compare import compare_assignment, compare_topk_selection, Result
from .tolerances import load_registry
from .weights import load_into_jittor, load_into_torch, realistic_random_state, torch_shapes


@dataclass
class Pair:
    """Both twins built from one config, holding the same weights."""
    config: str
    ref: object
    jt: object
    weights: dict = field(repr=False)
    jittor_weight_edits: dict = field(default_factory=dict, repr=False)  # planted-bug tests only
    dtype: str = "float32"
    overrides: dict = None

    def fresh_reference(self):
        """Another reference model built from the same config, holding the pair's weights."""
        import reference_pytorch
        ref = reference_pytorch.build(self.config, self.overrides)
        if self.dtype == "float64":
            ref.model.double()
        load_into_torch(ref.model, self.weights)
        return ref

    def cast_inputs(self, images, targets=None):
        """Images and target boxes in the pair's float dtype (labels stay int64)."""
        images = images.astype(self.dtype)
        if targets is not None:
            targets = [{k: v.astype(self.dtype) if v.dtype.kind == "f" else v for k, v in t.items()}
                       for t in targets]
        return images, targets

    def jittor_weights(self):
        return {**self.weights, **self.jittor_weight_edits}


def build_pair(config, overrides=None, weight_seed=0, random_weights=True, dtype="float32"):
    """``dtype="float64"`` runs both twins in double precision: float32 rounding then no
    longer decides which side of a ReLU or sampling-cell kink a value falls on, so
    whole-model gradients can be compared to the issue's 1e-4 relative target."""
    import reference_pytorch
    import rtdetr_jittor
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    ref = reference_pytorch.build(config, overrides)
    jtb = rtdetr_jittor.build(config, overrides)
    if dtype == "float64":
        ref.model.double()
        jtb.model.float64()
    if random_weights:
        state = realistic_random_state(torch_shapes(ref.model), weight_seed)
        load_into_torch(ref.model, state)
    else:
        state = {k: v.detach().numpy().copy() for k, v in ref.model.state_dict().items()}
    load_into_jittor(jtb.model, state)
    return Pair(config, ref, jtb, state, dtype=dtype, overrides=overrides)


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


def torch_targets(targets):
    import torch
    return [{k: torch.from_numpy(v.copy()) for k, v in t.items()} for t in targets]


def jittor_targets(targets):
    return [{k: jittor_array(v) for k, v in t.items()} for t in targets]


def jittor_array(value):
    """A copy as a Jittor Var; floats keep their dtype (``jt.array`` alone turns float64
    into float32, which would leave a float64 comparison with float32 targets)."""
    from rtdetr_jittor._env import jt
    value = np.array(value, copy=True)
    return jt.array(value, dtype=str(value.dtype)) if value.dtype.kind == "f" else jt.array(value)


# Module outputs that only one framework's hooks can see; they are left out of the
# comparison (their consumers' outputs are compared), each with the reason.
UNPAIRED_MODULES = {
    "*.self_attn.out_proj": "torch's MultiheadAttention applies out_proj functionally, so no torch hook fires",
    "*.short.pool.layer": "Jittor's AvgPool2d wraps an internal Pool module that torch does not have",
}

# Top-k selections (override points) and the scores they select by, for tie-aware judging.
TOPK_SCORES = {
    "decoder.topk_ind": ("decoder.enc_outputs_class", lambda v: v.max(-1)),
    "postprocessor.topk_index": ("postprocessor.flat_scores", lambda v: v),
}

# Tensors the official model builds in float32 whatever the model's dtype (position
# embedding, anchors, noised denoising boxes: float32 sin/cos/log, where Jittor and torch
# differ by an ulp or two). A float64 comparison records the twin's own value (judged
# at float32 level) and then takes the reference's, so that those ulps do not show as
# 1e-7 errors in a float64 model.
FLOAT32_CONSTANTS = ("encoder.pos_embed", "decoder.anchors", "decoder.dn.input_query_bbox")

MATCHER_RECORD = re.compile(r"^probe:matcher\.indices(#\d+)?\.(\d+)\.([01])$")


def as_framework_tensor(value):
    """A forced constant as a tensor of the framework that asks for it (its default's type)."""
    def convert(default):
        if type(default).__module__.startswith("torch"):
            import torch
            return torch.from_numpy(value.copy())
        return jittor_array(value)
    return convert


def _forced_decisions(ref_capture, force_topk, force_matcher, force_constants=False):
    by = ref_capture.by_name()
    forced = {}
    for name in FLOAT32_CONSTANTS if force_constants else ():
        if f"probe:{name}" in by:
            forced[name] = as_framework_tensor(by[f"probe:{name}"].value)
    if force_topk:
        for probe in TOPK_SCORES:
            if f"probe:{probe}" in by:
                forced[probe] = by[f"probe:{probe}"].value
    if force_matcher:
        calls = {}
        for r in ref_capture.records:
            m = MATCHER_RECORD.match(r.name)
            if m:
                per_image = calls.setdefault(m.group(1) or "", {})
                per_image.setdefault(int(m.group(2)), [None, None])[int(m.group(3))] = r.value
        ordered = [calls[k] for k in sorted(calls, key=lambda c: int(c[1:]) if c else 0)]
        forced["matcher.indices"] = ForcedSequence(
            [[tuple(per_image[i]) for i in sorted(per_image)] for per_image in ordered])
    return forced


class ForcedSequence:
    """A forced value that differs per call (the matcher runs once per output head; a
    constant is built once per training step). A callable value is called with the
    twin's own value (see :func:`as_framework_tensor`)."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def __call__(self, default):
        if self.calls >= len(self.values):
            raise RuntimeError("the twin took more decisions at this point than the reference")
        value = self.values[self.calls]
        self.calls += 1
        return value(default) if callable(value) else value


def judge_captures(ref_cap, jt_cap, registry, floors=None):
    """Judge every tensor of the reference capture against the twin's, in execution order.
    ``floors``: ``{name: per-element noise floor}`` from :func:`noise_floors` (float32)."""
    jt_by = jt_cap.by_name()
    ref_by = ref_cap.by_name()
    results, done = [], set()
    for rec in ref_cap.records:
        if rec.name in done:
            continue
        done.add(rec.name)
        other = jt_by.get(rec.name)
        if other is None:
            results.append(Result(rec.name, "missing", {"tol_ratio": float("inf")}, False,
                                  note="recorded by the reference, not by the Jittor twin"))
            continue
        if rec.name[len("probe:"):] in TOPK_SCORES:
            score_name, reduce = TOPK_SCORES[rec.name[len("probe:"):]]
            scores = ref_by.get(f"probe:{score_name}")
            score_values = reduce(scores.value) if scores is not None else None
            res = compare_topk_selection(rec.value, other.value, score_values, atol=1e-6, name=rec.name)
        elif rec.kind == "no-gradient" or other.kind == "no-gradient":
            # Jittor returns zeros for a parameter the loss does not reach; torch returns
            # None there, or zeros where the path exists but carries nothing (empty targets).
            present = other if rec.kind == "no-gradient" else rec
            both = rec.kind == other.kind or not np.any(present.value)
            res = Result(rec.name, "gradient-presence", {"tol_ratio": 0.0 if both else float("inf")}, both,
                         rule="gradient presence",
                         note="" if both else ("no gradient in the reference only" if rec.kind == "no-gradient"
                                               else "no gradient in the Jittor twin only"))
        elif MATCHER_RECORD.match(rec.name) and rec.name.endswith(".0"):
            call, image = MATCHER_RECORD.match(rec.name).group(1) or "", MATCHER_RECORD.match(rec.name).group(2)
            cols_name = rec.name[:-1] + "1"
            cost = ref_by.get(f"probe:matcher.cost{call}.{image}")
            res = compare_assignment(rec.value, ref_by[cols_name].value, other.value, jt_by[cols_name].value,
                                     cost.value if cost is not None else None, atol=1e-5, name=rec.name[:-2])
            done.add(cols_name)
        else:
            test_value = other.value
            if rec.value.shape == () and test_value.shape == (1,):
                test_value = test_value.reshape(())  # Jittor has no 0-d tensors
            res = registry.judge(rec.name, rec.value, test_value, floor=(floors or {}).get(rec.name))
        results.append(res)
    for name in jt_by:
        if name not in ref_by and not any(fnmatch.fnmatchcase(name, p) for p in UNPAIRED_MODULES):
            results.append(Result(name, "missing", {"tol_ratio": float("inf")}, False,
                                  note="recorded by the Jittor twin, not by the reference"))
    return gradients_follow_forward(results)


def gradients_follow_forward(results):
    """Every gradient depends on the whole forward pass downstream of its parameter, and
    a kink flip (a ReLU input or a sampling point within rounding of its edge) moves a
    gradient where no floor run can predict it. So when any forward tensor is not
    judgeable in float32, no gradient is: its float64 verdict decides."""
    unjudged = [r.name for r in results if r.verdict == "not judgeable" and not r.name.startswith("grad:")]
    if not unjudged:
        return results
    for r in results:
        if r.name.startswith("grad:") and r.kind == "floor":
            r.passed, r.judgeable = False, False
            r.note = (f"not judgeable in float32: {len(unjudged)} forward tensor(s) are not (first {unjudged[0]}), "
                      f"and every gradient depends on the forward pass; the float64 verdict decides"
                      + (f" (beyond its floor allowance {r.metrics.get('tol_ratio', 0):.3g}x)"
                         if r.metrics.get("n_outside") else ""))
    return results


# How many one-ulp perturbations of the input measure the reference's noise floor:
# where an output or gradient sits near a kink (ReLU at 0, a sampling point crossing a
# pixel edge) its sensitivity is heavy-tailed, and one sample underestimates it.
FLOOR_RUNS = 3


def perturb_one_ulp(images, seed=0):
    """Every pixel moved by one ulp of its dtype, up or down at random: the smallest
    change of the input the dtype can express, used to measure the reference's noise floor."""
    rng = np.random.default_rng(seed)
    direction = np.where(rng.random(images.shape) < 0.5, -np.inf, np.inf).astype(images.dtype)
    return np.nextafter(images, direction).astype(images.dtype)


def _eval_pass(pair, framework, images, inputs_of=()):
    sizes = np.array([[images.shape[3], images.shape[2]]] * images.shape[0], images.dtype)
    if framework == "torch":
        load_into_torch(pair.ref.model, pair.weights)
    else:
        load_into_jittor(pair.jt.model, pair.jittor_weights())
    if framework == "torch":
        import torch
        model = pair.ref.model.eval()

        def run():
            with torch.no_grad():
                out = model(torch.from_numpy(images.copy()))
                probes.record("output", {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]})
                pair.ref.postprocessor(out, torch.from_numpy(sizes))
    else:
        from rtdetr_jittor._env import jt
        model = pair.jt.model
        model.eval()

        def run():
            with jt.no_grad():
                out = model(jittor_array(images))
                probes.record("output", {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]})
                pair.jt.postprocessor(out, jittor_array(sizes))
    return cap.capture(model, run, framework, inputs_of)[1]


def _train_pass(pair, framework, images, targets, noise_seed, with_grads, inputs_of=(), multi_scale=None):
    extra = []
    if framework == "torch":
        import torch
        model = pair.ref.model.train()
    else:
        from rtdetr_jittor._env import jt
        model = pair.jt.model
        model.train()
    # Training updates BatchNorm statistics: every pass starts from the pair's weights.
    if framework == "torch":
        load_into_torch(model, pair.weights)
    else:
        load_into_jittor(model, pair.jittor_weights())
    model.decoder.denoising_noise = NumpyDenoisingNoise(noise_seed)
    model.size_sampler = NumpySizeSampler(noise_seed)
    model.multi_scale = list(multi_scale) if multi_scale else None

    def run_ref():
        out = model(torch.from_numpy(images.copy()), torch_targets(targets))
        losses = pair.ref.criterion(out, torch_targets(targets))
        total = sum(losses.values())
        for k, v in losses.items():
            extra.append((f"loss:{k}", v.detach().numpy().reshape(())))
        extra.append(("loss:total", total.detach().numpy().reshape(())))
        if with_grads:
            model.zero_grad(set_to_none=True)
            total.backward()
            for n, p in model.named_parameters():
                if p.requires_grad:
                    extra.append((f"grad:{n}", None if p.grad is None else p.grad.numpy().copy()))

    def run_jt():
        out = model(jittor_array(images), jittor_targets(targets))
        losses = pair.jt.criterion(out, jittor_targets(targets))
        total = sum(losses.values())
        for k, v in losses.items():
            extra.append((f"loss:{k}", v.numpy().reshape(())))
        extra.append(("loss:total", total.numpy().reshape(())))
        if with_grads:
            from rtdetr_jittor.compat import has_consumers, trainable_named_parameters
            named = trainable_named_parameters(model)
            used = [has_consumers(p) for _, p in named]  # torch's "grad is None" is "not used by the graph"
            grads = jt.grad(total, [p for _, p in named])
            for (n, _), g, u in zip(named, grads, used):
                extra.append((f"grad:{n}", g.numpy().copy() if u else None))

    capture = cap.capture(model, run_ref if framework == "torch" else run_jt, framework, inputs_of)[1]
    _append(capture, extra)
    return capture


def run_eval_forward(pair, images, force_topk=True, measure_floor=False):
    """Eval-mode forward and post-processing in both frameworks.
    Returns (reference capture, twin capture, list of floor captures)."""
    ref_cap = _eval_pass(pair, "torch", images)
    with probes.forcing(_forced_decisions(ref_cap, force_topk, False, pair.dtype == "float64")):
        jt_cap = _eval_pass(pair, "jittor", images)
    floor_caps = []
    for seed in range(FLOOR_RUNS if measure_floor else 0):
        with probes.forcing(_forced_decisions(ref_cap, True, False)):
            floor_caps.append(_eval_pass(pair, "torch", perturb_one_ulp(images, seed)))
    return ref_cap, jt_cap, floor_caps


def run_train_forward(pair, images, targets, noise_seed=0, force_topk=True, force_matcher=False,
                      with_grads=True, measure_floor=False, multi_scale=None):
    """Training forward, criterion and backward in both frameworks: module outputs,
    probes, ``loss:`` terms and ``grad:`` tensors. ``multi_scale``: the sizes the
    official multi-scale resize draws from (one seeded sampler per side), or None.
    With ``measure_floor`` the reference also runs on ``FLOOR_RUNS`` one-ulp-perturbed
    inputs with its own discrete decisions forced, giving each tensor's noise floor.
    Returns (ref capture, twin capture, list of floor captures)."""
    ref_cap = _train_pass(pair, "torch", images, targets, noise_seed, with_grads, multi_scale=multi_scale)
    with probes.forcing(_forced_decisions(ref_cap, force_topk, force_matcher, pair.dtype == "float64")):
        jt_cap = _train_pass(pair, "jittor", images, targets, noise_seed, with_grads, multi_scale=multi_scale)
    floor_caps = []
    for seed in range(FLOOR_RUNS if measure_floor else 0):
        with probes.forcing(_forced_decisions(ref_cap, True, True)):
            floor_caps.append(_train_pass(pair, "torch", perturb_one_ulp(images, seed), targets, noise_seed,
                                          with_grads, multi_scale=multi_scale))
    return ref_cap, jt_cap, floor_caps


def noise_floors(ref_cap, floor_caps):
    """``{name: per-element max over perturbed runs of |ref - ref_perturbed|}`` (float32
    arrays) for float tensors; non-finite differences count as 0 (a tensor non-finite in
    the reference is judged by where its non-finite values sit, not by a floor)."""
    floors = {}
    for floor_cap in floor_caps:
        other = floor_cap.by_name()
        for rec in ref_cap.records:
            o = other.get(rec.name)
            if (o is not None and rec.value.dtype.kind == "f" and o.value.shape == rec.value.shape
                    and rec.kind != "no-gradient" and o.kind != "no-gradient"):
                diff = np.abs(rec.value.astype(np.float64) - o.value.astype(np.float64))
                diff = np.where(np.isfinite(diff), diff, 0.0).astype(np.float32)
                floors[rec.name] = np.maximum(floors[rec.name], diff) if rec.name in floors else diff
    return floors


def _append(capture, items):
    for name, value in items:
        if value is None:
            capture.records.append(cap.Record(name, np.array(np.nan, np.float32), name, "no-gradient"))
        else:
            capture.records.append(cap.Record(name, value, name, "extra"))


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
    with probes.forcing(_forced_decisions(ref_cap, True, mode == "train")):
        if mode == "eval":
            rerun = _eval_pass(pair, "torch", images, inputs_of=(module,))
        else:
            rerun = _train_pass(pair, "torch", images, targets, noise_seed, False, inputs_of=(module,),
                                multi_scale=multi_scale)
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
            measure_floor=None, registry=None, multi_scale=None):
    """Run ``mode`` ('eval' or 'train') and judge with the registry of the pair's dtype;
    returns (results, ref_capture, jt_capture). The reference's noise floor is measured
    for float32 pairs unless ``measure_floor`` says otherwise."""
    registry = registry or load_registry(dtype=pair.dtype)
    measure_floor = pair.dtype == "float32" if measure_floor is None else measure_floor
    images, targets = pair.cast_inputs(images, targets)
    check_inputs(pair, images, targets)
    if mode == "eval":
        ref_cap, jt_cap, floor_caps = run_eval_forward(pair, images, force_topk, measure_floor)
    elif mode == "train":
        ref_cap, jt_cap, floor_caps = run_train_forward(pair, images, targets, noise_seed, force_topk, force_matcher,
                                                        measure_floor=measure_floor, multi_scale=multi_scale)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return judge_captures(ref_cap, jt_cap, registry, noise_floors(ref_cap, floor_caps)), ref_cap, jt_cap
