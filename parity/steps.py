"""K optimizer steps in both frameworks from identical weights on identical batches.

Each step runs the official recipe (training forward with denoising, SetCriterion,
backward, clipping by global norm, AdamW with the config's regex groups, warm-up LR,
EMA update) in both twins, then records the parameters, the Adam moments and the EMA
weights under ``step{k}:param:``, ``step{k}:exp_avg:``, ``step{k}:exp_avg_sq:`` and
``step{k}:ema:``, so the report shows whether the gap grows from step to step.
Denoising noise comes from two NumPy generators with the same seed, one per side.
Top-k and matcher decisions are not forced here: each framework trains on its own
decisions, as a user's run would.

With ``floor_runs`` > 0, copies of the reference also train on every batch moved by one
float32 ulp; how far their state drifts from the reference's is each tensor's noise
floor per step (in float32 one ReLU or sampling point near a kink moves whole-network
gradients, so Adam's moments are judged against that floor, as gradients are).
"""
import numpy as np

from rtdetr_common.lr_schedule import build_lr_schedule
from rtdetr_common.noise import NumpyDenoisingNoise, NumpySizeSampler

from .run import jittor_array, jittor_targets, torch_targets


class _Side:
    """One framework's training state for the step comparison."""

    def __init__(self, framework, built, noise_seed):
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

    def step(self, images, targets):
        model, criterion = self.built.model, self.built.criterion
        self.schedule.step_iteration()
        if self.framework == "torch":
            import torch
            out = model(torch.from_numpy(images.copy()), torch_targets(targets))
            losses = criterion(out, torch_targets(targets))
        else:
            out = model(jittor_array(images), jittor_targets(targets))
            losses = criterion(out, jittor_targets(targets))
        total = sum(losses.values())
        loss_value = float(total.item())
        grad_norm = self.update(total, self.optimizer, self.clip)
        self.ema.update(model)
        return loss_value, grad_norm

    def snapshot(self, k):
        if self.framework == "torch":
            from reference_pytorch.checkpoint import model_state_numpy, _optimizer_state_numpy
            opt = _optimizer_state_numpy(self.optimizer)
        else:
            from rtdetr_jittor.checkpoint import model_state_numpy
            opt = self.optimizer.state_dict()
        out = {}
        trainable = {n for g in self.optimizer.param_groups for n in g["names"]}
        for name, value in model_state_numpy(self.built.model).items():
            if name in trainable:
                out[f"step{k}:param:{name}"] = value
        for name, state in sorted(opt["state"].items()):
            out[f"step{k}:exp_avg:{name}"] = np.asarray(state["exp_avg"])
            out[f"step{k}:exp_avg_sq:{name}"] = np.asarray(state["exp_avg_sq"])
        for name, value in model_state_numpy(self.ema.module).items():
            if np.issubdtype(value.dtype, np.floating):
                out[f"step{k}:ema:{name}"] = value
        return out


def run_steps(pair, batches, steps, noise_seed=0, registry=None, floor_runs=2):
    """Train both twins ``steps`` steps; return (results, per-step drift table)."""
    from .run import perturb_one_ulp
    from .tolerances import load_registry
    if pair.dtype != "float32":
        raise ValueError("optimizer steps are compared in float32 only (build the pair with dtype='float32')")
    registry = registry or load_registry()
    floor_sides = [_Side("torch", pair.fresh_reference(), noise_seed) for _ in range(floor_runs)]
    ref = _Side("torch", pair.ref, noise_seed)
    jts = _Side("jittor", pair.jt, noise_seed)
    results, drift = [], []
    for k in range(1, steps + 1):
        images, targets = batches[(k - 1) % len(batches)]
        ref_loss, ref_norm = ref.step(images, targets)
        jt_loss, jt_norm = jts.step(images, targets)
        a, b = ref.snapshot(k), jts.snapshot(k)
        floors = {}
        for run, side in enumerate(floor_sides):
            floor_loss, _ = side.step(perturb_one_ulp(images, seed=1000 * run + k), targets)
            floors[f"step{k}:loss:total"] = max(floors.get(f"step{k}:loss:total", 0.0), abs(floor_loss - ref_loss))
            for name, value in side.snapshot(k).items():
                floors[name] = max(floors.get(name, 0.0), float(np.abs(value.astype(np.float64) - a[name]).max()))
        floors = floors if floor_sides else {}
        results.append(registry.judge(f"step{k}:loss:total", np.float32(ref_loss), np.float32(jt_loss),
                                      floor=floors.get(f"step{k}:loss:total")))
        worst = 0.0
        for name in a:
            if name not in b:
                from .compare import Result
                results.append(Result(name, "missing", {"tol_ratio": float("inf")}, False,
                                      note="present in the reference's training state only"))
                continue
            res = registry.judge(name, a[name], b[name], floor=floors.get(name))
            results.append(res)
            if ":param:" in name:
                denom = float(np.abs(a[name]).max()) or 1.0
                worst = max(worst, float(np.abs(a[name] - b[name]).max()) / denom)
        drift.append({"step": k, "loss_ref": ref_loss, "loss_jittor": jt_loss, "grad_norm_ref": ref_norm,
                      "grad_norm_jittor": jt_norm, "max_param_rel_diff": worst})
    return results, drift
