"""AdamW with the official regex parameter groups, and gradient clipping by global norm.

Jittor's own AdamW decays parameters that received no gradient and its default
weight decay differs from torch; this AdamW follows ``torch.optim.AdamW`` step for
step (per-parameter step counts, ``lerp`` first moment, bias corrections, decoupled
decay) and skips parameters without a gradient, as torch does for ``grad is None``.

Which parameters have "no gradient": ``jt.grad`` returns zeros for a parameter the
loss does not reach, where torch leaves ``grad`` None. Testing for an all-zero
gradient is not the same thing: RT-DETR's box heads start with a zero last layer, so
in the first step their hidden layers get an exactly-zero gradient through the graph,
and torch counts that step (Adam step 1, decay) while a zero test would skip it and
offset every later bias correction. A parameter is therefore treated as reached when
the live graph has an op that consumes it (``compat.has_consumers``, checked before
``jt.grad`` frees the graph); one the forward pass never touched (the denoising
embedding in a batch with no ground truth) has none.

Each parameter's update runs as one kernel (``compat.kernels.adamw``, torch's formula);
``RTDETR_JITTOR_ADAMW=ops`` runs the same arithmetic as Jittor ops.
"""
import math

from rtdetr_jittor._env import jt
from rtdetr_common.param_groups import group_parameter_names, optimizer_defaults
from rtdetr_jittor.compat import has_consumers, kernels, minimum, trainable_named_parameters
from rtdetr_jittor.compat.kernels.adamw import adamw_update, step_scalars


class AdamW:
    """``torch.optim.AdamW`` semantics on Jittor Vars (``param_groups``, ``state_dict``)."""

    def __init__(self, groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        self.param_groups = [{**self.defaults, **g} for g in groups]
        self.state = {}
        self.grads = {}

    def zero_grad(self):
        self.grads = {}

    def backward(self, loss):
        params = [p for g in self.param_groups for p in g["params"]]
        names = [n for g in self.param_groups for n in g["names"]]
        reached = [has_consumers(p) for p in params]  # before jt.grad frees the graph
        grads = jt.grad(loss, params, retain_graph=False)
        self.grads = {n: (g.detach() if r else None) for n, g, r in zip(names, grads, reached)}

    def step(self):
        fused = kernels.enabled("ADAMW")
        scalars = {}
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for name, p in zip(group["names"], group["params"]):
                grad = self.grads.get(name)
                if grad is None:
                    continue
                st = self.state.setdefault(name, {"step": 0, "exp_avg": jt.zeros_like(p).stop_grad(),
                                                  "exp_avg_sq": jt.zeros_like(p).stop_grad()})
                st["step"] += 1
                if fused and p.numel() > 0:
                    key = (lr, group["betas"], eps, wd, st["step"])
                    if key not in scalars:
                        scalars[key] = step_scalars(lr, group["betas"], eps, wd, st["step"])
                    p_new, exp_avg, exp_avg_sq = adamw_update(p, grad, st["exp_avg"], st["exp_avg_sq"], scalars[key])
                    p.update(p_new)
                else:
                    p_new = p * (1 - lr * wd)
                    exp_avg = st["exp_avg"] + (grad - st["exp_avg"]) * (1 - beta1)
                    exp_avg_sq = st["exp_avg_sq"] * beta2 + grad * grad * (1 - beta2)
                    bias1 = 1 - beta1 ** st["step"]
                    bias2_sqrt = math.sqrt(1 - beta2 ** st["step"])
                    denom = jt.sqrt(exp_avg_sq) / bias2_sqrt + eps
                    p.update((p_new - exp_avg / denom * (lr / bias1)).detach())
                st["exp_avg"] = exp_avg.detach()
                st["exp_avg_sq"] = exp_avg_sq.detach()
        jt.sync([p for g in self.param_groups for p in g["params"]] +
                [v for st in self.state.values() for v in (st["exp_avg"], st["exp_avg_sq"])])

    def state_dict(self):
        state = {n: {"step": s["step"], "exp_avg": s["exp_avg"].numpy(), "exp_avg_sq": s["exp_avg_sq"].numpy()}
                 for n, s in self.state.items()}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        for group, saved in zip(self.param_groups, sd["param_groups"]):
            if list(group["names"]) != list(saved["names"]):
                raise ValueError("optimizer state does not match the model's parameter groups")
            group.update({k: v for k, v in saved.items() if k != "names"})
        self.state = {n: {"step": int(s["step"]), "exp_avg": jt.array(s["exp_avg"]).stop_grad(),
                          "exp_avg_sq": jt.array(s["exp_avg_sq"]).stop_grad()} for n, s in sd["state"].items()}
        # materialised now, not fused as pending array ops into the next update (which rounds differently)
        jt.sync([v for st in self.state.values() for v in (st["exp_avg"], st["exp_avg_sq"])])


def build_optimizer(optimizer_cfg, model):
    """The AdamW above over the trainable parameters, grouped by the config's regexes.
    Each group also carries ``names`` (parameter names, in order) for the harness."""
    named = dict(trainable_named_parameters(model))
    defaults = optimizer_defaults(optimizer_cfg)
    groups = [{**opts, "params": [named[n] for n in names], "names": names}
              for opts, names in group_parameter_names(optimizer_cfg, list(named))]
    return AdamW(groups, **defaults)


def clip_grad_norm(optimizer, max_norm):
    """Clip all gradients to global L2 norm ``max_norm`` (if > 0); return the norm before clipping."""
    names = [n for n, g in optimizer.grads.items() if g is not None]
    if not names:
        return 0.0
    squares = [(optimizer.grads[n].float64() ** 2).sum() for n in names]
    total = jt.sqrt(jt.stack(squares).sum()).astype(optimizer.grads[names[0]].dtype)
    if max_norm and max_norm > 0:
        coef = minimum(max_norm / (total + 1e-6), jt.ones_like(total))
        for n in names:
            optimizer.grads[n] = (optimizer.grads[n] * coef).detach()
    return float(total.item())


def optimizer_update(loss, optimizer, max_norm, before_step=None, reduce_gradients=None):
    """zero_grad, backward, clip, step. Returns the gradient norm before clipping.
    ``reduce_gradients(optimizer)``, if given, runs after backward (the data-parallel
    average over ranks); ``before_step(norm)``, if given, is called before the step and
    may refuse it by raising."""
    optimizer.zero_grad()
    optimizer.backward(loss)
    if reduce_gradients is not None:
        reduce_gradients(optimizer)
    norm = clip_grad_norm(optimizer, max_norm)
    if before_step is not None:
        before_step(norm)
    optimizer.step()
    return norm


def parameter_gradients(optimizer):
    """``{name: gradient or None}`` after backward, for the harness."""
    return dict(optimizer.grads)
