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
import tempfile

import numpy as np

from rtdetr_common import probes
from rtdetr_common.engine import build_training
from rtdetr_common.noise import NumpyDenoisingNoise, NumpySizeSampler
from rtdetr_common.training import TrainingSettings

from . import store
from .decisions import FLOAT32_CONSTANTS, ForcedSequence, as_tensor_of
from .judge import noise_floors
from .passes import perturb_one_ulp


class _Trainer:
    """One side's training state for the step comparison."""

    def __init__(self, side, noise_seed, multi_scale=None, reduce_gradients=None):
        """``reduce_gradients(optimizer)``: the data-parallel gradient average, or None."""
        self.reduce_gradients = reduce_gradients
        self.backend = backend = side.backend
        self.built = built = side.built
        cfg = built.cfg
        backend.set_mode(built.model, True)
        self.optimizer, self.ema, self.schedule = build_training(backend, cfg, built.model, with_ema=True)
        self.clip = TrainingSettings.from_config(cfg).clip_max_norm
        built.model.decoder.denoising_noise = NumpyDenoisingNoise(noise_seed)
        built.model.size_sampler = NumpySizeSampler(noise_seed)
        built.model.multi_scale = list(multi_scale) if multi_scale else None

    def step(self, images, targets, forced=None):
        """One training step; returns (loss, gradient norm before clipping, the float32-built
        constants this side computed, ``{name: [arrays]}``)."""
        model, criterion, backend = self.built.model, self.built.criterion, self.backend
        to_numpy = backend.to_numpy
        constants = {}

        def keep(name, value):
            if name in FLOAT32_CONSTANTS:
                constants.setdefault(name, []).append(to_numpy(value))

        self.schedule.step_iteration()
        with probes.recording(keep), probes.forcing(forced or {}):
            out = model(backend.from_numpy(images), backend.targets_from_numpy(targets))
            losses = criterion(out, backend.targets_from_numpy(targets))
        total = sum(losses.values())
        loss_value = to_numpy(total).reshape(())
        grad_norm = backend.optimizer_update(total, self.optimizer, self.clip, reduce_gradients=self.reduce_gradients)
        self.ema.update(model)
        return loss_value, grad_norm, constants

    def snapshot(self, k, loss, grad_norm, constants):
        model_state_numpy = self.backend.model_state_numpy
        opt = self.backend.optimizer_state_numpy(self.optimizer)
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


def run_steps(pair, batches, steps, noise_seed=0, registry=None, floor_runs=2, multi_scale=None, directory=None):
    """Train both twins ``steps`` steps; return (results, per-step drift table).
    ``floor_runs`` applies to float32 pairs only (float64 is judged without a floor).
    Each step's training state (reference, twin, floors) is saved under ``directory``
    (kept, for ``python -m parity judge``) or a temporary one, and judged from there."""
    from .run import judge_run
    registry = registry or pair.registry()
    floor_runs = floor_runs if pair.dtype == "float32" else 0
    reference, twin = pair.reference, pair.twin
    reference.load_weights()  # earlier passes moved BatchNorm statistics
    twin.load_weights()
    floor_trainers = [_Trainer(pair.fresh_reference(), noise_seed, multi_scale) for _ in range(floor_runs)]
    ref = _Trainer(reference, noise_seed, multi_scale)
    jts = _Trainer(twin, noise_seed, multi_scale)
    drift, passes = [], []
    with tempfile.TemporaryDirectory(prefix="parity-steps-") as tmp:
        directory = directory or tmp
        for k in range(1, steps + 1):
            images, targets = pair.cast_inputs(*batches[(k - 1) % len(batches)])
            ref_step = ref.step(images, targets)
            forced = {}
            if pair.dtype == "float64":
                forced = {name: ForcedSequence([as_tensor_of(twin.backend, v) for v in values])
                          for name, values in ref_step[2].items()}
            a = ref.snapshot(k, *ref_step)
            b = jts.snapshot(k, *jts.step(images, targets, forced))
            names = {"reference": f"step{k}_reference", "twin": f"step{k}_jittor", "floor": None}
            if floor_trainers:
                perturbed = [store.capture_from_arrays(t.snapshot(k, *t.step(perturb_one_ulp(images, 1000 * run + k),
                                                                              targets)))
                             for run, t in enumerate(floor_trainers)]
                names["floor"] = f"step{k}_floor"
                store.save_floors(directory, names["floor"], noise_floors(store.capture_from_arrays(a), perturbed))
            store.save_capture(directory, names["reference"], store.capture_from_arrays(a))
            store.save_capture(directory, names["twin"], store.capture_from_arrays(b))
            passes.append(names)
            worst = max((float(np.abs(a[n] - b[n]).max()) / (float(np.abs(a[n]).max()) or 1.0)
                         for n in a if ":param:" in n and n in b), default=0.0)
            drift.append({"step": k, "loss_ref": float(a[f"step{k}:loss:total"]),
                          "loss_jittor": float(b[f"step{k}:loss:total"]),
                          "grad_norm_ref": float(a[f"step{k}:grad_norm"]),
                          "grad_norm_jittor": float(b[f"step{k}:grad_norm"]), "max_param_rel_diff": worst})
        info = {"passes": passes, "dtype": pair.dtype, "mode": "steps", "config": pair.config, "drift": drift,
                "weights": pair.weights_kind}
        store.write_run(directory, info)
        return judge_run(directory, registry, info), drift
