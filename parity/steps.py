"""K optimizer steps in both frameworks from identical weights on identical batches.

Each step runs the official recipe (training forward with denoising and, when asked,
the multi-scale resize; SetCriterion, backward, clipping by global norm, AdamW with the
config's regex groups, warm-up LR, EMA update) in both twins, then records everything
that moved: the trainable parameters (``step{k}:param:``), the model's buffers
(BatchNorm running statistics and ``num_batches_tracked``, ``step{k}:buffer:``), the
Adam moments and step counts (``step{k}:exp_avg:``, ``step{k}:exp_avg_sq:``,
``step{k}:adam_step:``), the learning rate and weight decay of every parameter group
(``step{k}:lr:group{i}``, ``step{k}:weight_decay:group{i}``), the EMA decay used
(``step{k}:ema_decay``), the gradient norm before
clipping (``step{k}:grad_norm``), the loss (``step{k}:loss:total``) and the EMA copy
(``step{k}:ema:``), and the tensors the official model builds in float32 whatever
its dtype (``step{k}:probe:``, see ``run.FLOAT32_CONSTANTS``). Denoising noise and
multi-scale sizes come from NumPy generators with the same seed, one per side. Top-k
and matcher decisions are not forced here:
each framework trains on its own decisions, as a user's run would.

In float64 the twin's own float32-built constants are recorded, then replaced by the
reference's for the rest of the step, as in the single-pass comparisons.
In float32, with ``floor_runs`` > 0, copies of the reference also train on every batch
moved by one float32 ulp; how far their state drifts from the reference's, element by
element, is each tensor's noise floor per step. In float64 the logic-verdict rules
judge without a floor.
"""
import numpy as np

from rtdetr_common import probes
from rtdetr_common.lr_schedule import build_lr_schedule
from rtdetr_common.noise import NumpyDenoisingNoise, NumpySizeSampler

from .capture import jittor_to_numpy, torch_to_numpy
from .compare import Result
from .run import (FLOAT32_CONSTANTS, ForcedSequence, as_framework_tensor, jittor_array, jittor_targets,
                  perturb_one_ulp, torch_targets)
from .weights import load_into_jittor, load_into_torch


class _Side:
    """One framework's training state for the step comparison."""

    def __init__(self, framework, built, noise_seed, multi_scale=None):
        self.framework = framework
        self.built = built
        cfg = built.cfg
        if framework == "torch":
            from reference_pytorch.optim.ema import ModelEMA
            from reference_pytorch.optim.optim import build_optimizer, optimizer_update
        else:
            from rtdetr_jittor.optim.ema import ModelEMA
            from rtdetr_jittor.optim.optim import build_optimizer, optimizer_update
        built.model.train()
        self.update = optimizer_update
        self.optimizer = build_optimizer(cfg["optimizer"], built.model)
        ema_cfg = {k: v for k, v in (cfg.get("ema") or {}).items() if k != "type"}
        self.ema = ModelEMA(built.model, **ema_cfg)
        self.schedule = build_lr_schedule(cfg, self.optimizer)
        self.clip = float(cfg.get("clip_max_norm", 0.0) or 0.0)
        built.model.decoder.denoising_noise = NumpyDenoisingNoise(noise_seed)
        built.model.size_sampler = NumpySizeSampler(noise_seed)
        built.model.multi_scale = list(multi_scale) if multi_scale else None

    def step(self, images, targets, forced=None):
        """One training step; returns (loss, gradient norm before clipping, the float32-built
        constants this side computed, ``{name: [arrays]}``)."""
        model, criterion = self.built.model, self.built.criterion
        to_numpy = torch_to_numpy if self.framework == "torch" else jittor_to_numpy
        constants = {}

        def keep(name, value):
            if name in FLOAT32_CONSTANTS:
                constants.setdefault(name, []).append(to_numpy(value))

        self.schedule.step_iteration()
        with probes.recording(keep), probes.forcing(forced or {}):
            if self.framework == "torch":
                import torch
                out = model(torch.from_numpy(images.copy()), torch_targets(targets))
                losses = criterion(out, torch_targets(targets))
            else:
                out = model(jittor_array(images), jittor_targets(targets))
                losses = criterion(out, jittor_targets(targets))
        total = sum(losses.values())
        loss_value = to_numpy(total).reshape(())
        grad_norm = self.update(total, self.optimizer, self.clip)
        self.ema.update(model)
        return loss_value, grad_norm, constants

    def snapshot(self, k, loss, grad_norm, constants):
        if self.framework == "torch":
            from reference_pytorch.checkpoint import model_state_numpy, optimizer_state_numpy
            opt = optimizer_state_numpy(self.optimizer)
        else:
            from rtdetr_jittor.checkpoint import model_state_numpy
            opt = self.optimizer.state_dict()
        dtype = loss.dtype
        out = {f"step{k}:loss:total": loss, f"step{k}:grad_norm": np.asarray(grad_norm, dtype)}
        out.update({f"step{k}:probe:{name}": values[0] for name, values in constants.items()})
        out[f"step{k}:ema_decay"] = np.asarray(self.ema.decay_at(self.ema.updates), np.float64)
        for i, group in enumerate(self.optimizer.param_groups):
            out[f"step{k}:lr:group{i}"] = np.asarray(group["lr"], np.float64)
            out[f"step{k}:weight_decay:group{i}"] = np.asarray(group["weight_decay"], np.float64)
        trainable = {n for g in self.optimizer.param_groups for n in g["names"]}
        for name, value in model_state_numpy(self.built.model).items():
            out[f"step{k}:{'param' if name in trainable else 'buffer'}:{name}"] = value
        for name, state in sorted(opt["state"].items()):
            out[f"step{k}:adam_step:{name}"] = np.asarray(int(state["step"]), np.int64)
            out[f"step{k}:exp_avg:{name}"] = np.asarray(state["exp_avg"])
            out[f"step{k}:exp_avg_sq:{name}"] = np.asarray(state["exp_avg_sq"])
        for name, value in model_state_numpy(self.ema.module).items():
            out[f"step{k}:ema:{name}"] = value
        return out


def _drift(ref_state, floor_state, floors):
    """Fold one perturbed copy's element-wise drift from the reference into ``floors``."""
    for name, value in floor_state.items():
        if name in ref_state and np.asarray(value).dtype.kind == "f":
            diff = np.abs(np.asarray(value, np.float64) - np.asarray(ref_state[name], np.float64)).astype(np.float32)
            floors[name] = np.maximum(floors[name], diff) if name in floors else diff


def _judge_state(registry, ref_state, twin_state, floors):
    results = []
    for name, value in ref_state.items():
        if name not in twin_state:
            results.append(Result(name, "missing", {"tol_ratio": float("inf")}, False,
                                  note="present in the reference's training state only"))
            continue
        results.append(registry.judge(name, value, np.asarray(twin_state[name]).reshape(np.shape(value)),
                                      floor=floors.get(name) if floors is not None else None))
    results.extend(Result(name, "missing", {"tol_ratio": float("inf")}, False,
                          note="present in the Jittor twin's training state only")
                   for name in twin_state if name not in ref_state)
    return results


def run_steps(pair, batches, steps, noise_seed=0, registry=None, floor_runs=2, multi_scale=None):
    """Train both twins ``steps`` steps; return (results, per-step drift table).
    ``floor_runs`` applies to float32 pairs only (float64 is judged without a floor)."""
    registry = registry or pair.registry()
    floor_runs = floor_runs if pair.dtype == "float32" else 0
    load_into_torch(pair.ref.model, pair.weights)  # earlier passes moved BatchNorm statistics
    load_into_jittor(pair.jt.model, pair.jittor_weights())
    floor_sides = [_Side("torch", pair.fresh_reference(), noise_seed, multi_scale) for _ in range(floor_runs)]
    ref = _Side("torch", pair.ref, noise_seed, multi_scale)
    jts = _Side("jittor", pair.jt, noise_seed, multi_scale)
    results, drift = [], []
    for k in range(1, steps + 1):
        images, targets = pair.cast_inputs(*batches[(k - 1) % len(batches)])
        ref_step = ref.step(images, targets)
        forced = {}
        if pair.dtype == "float64":
            forced = {name: ForcedSequence([as_framework_tensor(v) for v in values])
                      for name, values in ref_step[2].items()}
        a = ref.snapshot(k, *ref_step)
        b = jts.snapshot(k, *jts.step(images, targets, forced))
        floors = {} if floor_sides else None
        for run, side in enumerate(floor_sides):
            perturbed = perturb_one_ulp(images, seed=1000 * run + k)
            _drift(a, side.snapshot(k, *side.step(perturbed, targets)), floors)
        results.extend(_judge_state(registry, a, b, floors))
        worst = max((float(np.abs(a[n] - b[n]).max()) / (float(np.abs(a[n]).max()) or 1.0)
                     for n in a if ":param:" in n and n in b), default=0.0)
        drift.append({"step": k, "loss_ref": float(a[f"step{k}:loss:total"]),
                      "loss_jittor": float(b[f"step{k}:loss:total"]),
                      "grad_norm_ref": float(a[f"step{k}:grad_norm"]),
                      "grad_norm_jittor": float(b[f"step{k}:grad_norm"]), "max_param_rel_diff": worst})
    return results, drift
