"""AdamW with the official regex parameter groups, and gradient clipping by global norm."""
import torch

from rtdetr_common.param_groups import group_parameter_names, optimizer_defaults


def build_optimizer(optimizer_cfg, model):
    """``torch.optim.AdamW`` over the trainable parameters, grouped by the config's regexes.
    Each group also carries ``names`` (parameter names, in order) for the harness."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    defaults = optimizer_defaults(optimizer_cfg)
    groups = [{**opts, "params": [named[n] for n in names], "names": names}
              for opts, names in group_parameter_names(optimizer_cfg, list(named))]
    return torch.optim.AdamW(groups, **defaults)


def clip_grad_norm(optimizer, max_norm):
    """Clip all gradients to global L2 norm ``max_norm`` (if > 0); return the norm before clipping."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if max_norm and max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not params:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


def optimizer_update(loss, optimizer, max_norm, before_step=None, reduce_gradients=None):
    """zero_grad, backward, clip, step. Returns the gradient norm before clipping.
    ``reduce_gradients(optimizer)``, if given, runs after backward (the data-parallel
    average over ranks); ``before_step(norm)``, if given, is called before the step and
    may refuse it by raising."""
    optimizer.zero_grad()
    loss.backward()
    if reduce_gradients is not None:
        reduce_gradients(optimizer)
    norm = clip_grad_norm(optimizer, max_norm)
    if before_step is not None:
        before_step(norm)
    optimizer.step()
    return norm


def parameter_gradients(optimizer):
    """``{name: gradient or None}`` after backward, for the harness."""
    return {n: (p.grad.detach().clone() if p.grad is not None else None)
            for g in optimizer.param_groups for n, p in zip(g["names"], g["params"])}
