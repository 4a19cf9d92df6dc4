"""The official regex parameter grouping, framework-neutral.

Each entry of ``optimizer.params`` in the config has a regex ``params`` and group
options (``lr``, ``weight_decay``); a trainable parameter joins every group whose
regex it matches (``re.findall``), and the ones no regex matched form a last group
with the optimizer's defaults. A parameter that matches two groups is an error.
"""
import copy
import re


def group_parameter_names(optimizer_cfg, trainable_names):
    """Return ``[(group_options, [names])]`` in config order, leftovers last."""
    entries = copy.deepcopy(optimizer_cfg.get("params") or [])
    groups, seen = [], {}
    for entry in entries:
        pattern = entry.pop("params")
        names = [n for n in trainable_names if re.findall(pattern, n)]
        for n in names:
            if n in seen:
                raise ValueError(f"parameter {n!r} matches two optimizer groups: {seen[n]!r} and {pattern!r}")
            seen[n] = pattern
        groups.append((entry, names))
    rest = [n for n in trainable_names if n not in seen]
    if rest or not groups:
        groups.append(({}, rest))
    return groups


def optimizer_defaults(optimizer_cfg):
    """lr, betas, eps, weight_decay of the optimizer section (AdamW only)."""
    if optimizer_cfg.get("type", "AdamW") != "AdamW":
        raise ValueError(f"unsupported optimizer type {optimizer_cfg.get('type')!r} (AdamW only)")
    return {"lr": float(optimizer_cfg.get("lr", 1e-4)),
            "betas": tuple(optimizer_cfg.get("betas", (0.9, 0.999))),
            "eps": float(optimizer_cfg.get("eps", 1e-8)),
            "weight_decay": float(optimizer_cfg.get("weight_decay", 0.01))}
