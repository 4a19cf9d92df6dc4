"""Load the official RT-DETR YAML format: ``__include__`` lists, merged depth-first.

Included files are resolved relative to the including file and merged in order;
the including file's own keys win over its includes, and ``overrides`` (a nested
dict) win over everything. Mappings merge key by key; any other value replaces.
"""
import copy
import os

import yaml

INCLUDE_KEY = "__include__"


class ConfigError(ValueError):
    """A config file that cannot be read or resolved."""


def deep_merge(base, update):
    """Return ``base`` with ``update`` merged into it (mappings recursively)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_file(path, stack):
    path = os.path.abspath(path)
    if path in stack:
        raise ConfigError(f"circular __include__: {' -> '.join(stack + [path])}")
    if not os.path.isfile(path):
        where = f" (included from {stack[-1]})" if stack else ""
        raise ConfigError(f"config file not found: {path}{where}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"invalid YAML in {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    merged = {}
    for inc in raw.pop(INCLUDE_KEY, None) or []:
        inc_path = os.path.join(os.path.dirname(path), inc)
        merged = deep_merge(merged, _load_file(inc_path, stack + [path]))
    return deep_merge(merged, raw)


def load_config(path, overrides=None):
    """Load ``path`` with its includes resolved and ``overrides`` merged on top."""
    cfg = _load_file(path, [])
    cfg = deep_merge(cfg, overrides or {})
    cfg["__file__"] = os.path.abspath(path)
    return cfg
