"""Turn the official YAML config into objects, given a twin's class registry.

The official format names a class (``model: RTDETR``) and configures it under a
top-level key of the same name (``RTDETR: {backbone: PResNet, ...}``). Arguments
that name another registered class (``backbone: PResNet``) or give a mapping with a
``type`` (``matcher: {type: HungarianMatcher, ...}``) are built recursively. Keys a
class declares as shared (``num_classes``, ``use_focal_loss``, ...) are taken from the
top level of the config when its own section does not set them. Unknown arguments
are an error that names the class and the key.
"""
import inspect

SHARED_KEYS = ("num_classes", "use_focal_loss", "eval_spatial_size", "remap_mscoco_category")


def instantiate(cfg, registry, name, section=None):
    """Build registered class ``name`` from ``section`` (default: ``cfg[name]``)."""
    if name not in registry:
        raise KeyError(f"unknown class {name!r}; registered: {sorted(registry)}")
    cls = registry[name]
    params = inspect.signature(cls.__init__).parameters
    args = dict(cfg.get(name) or {}) if section is None else dict(section)
    args.pop("type", None)
    unknown = [k for k in args if k not in params]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"config for {name} has unknown key(s) {unknown}; {name} accepts {list(params)[1:]}")
    for key in SHARED_KEYS:
        if key in params and key not in args and key in cfg:
            args[key] = cfg[key]
    for key, value in list(args.items()):
        if isinstance(value, str) and value in registry:
            args[key] = instantiate(cfg, registry, value)
        elif isinstance(value, dict) and value.get("type") in registry:
            merged = {**(cfg.get(value["type"]) or {}), **value}
            args[key] = instantiate(cfg, registry, value["type"], merged)
    return cls(**args)
