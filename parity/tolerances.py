"""The tolerance registry: which rule judges which tensor, and why.

Rules live in ``parity/tolerances.yaml``, one ordered list per verdict: ``float64``
(the logic verdict: both twins in double precision, where no rounding flips a ReLU,
a top-k or a matching, so a porting bug stands far above the thresholds) and
``float32`` (the numerics verdict, judged against the reference's own noise floor).
Each rule maps a glob pattern (``fnmatch``, case-sensitive, ``*`` also crosses dots)
on a qualified tensor name to one of four kinds of threshold, always with a ``reason``:

* ``{atol, rtol}``  element-wise, via :func:`parity.compare.compare_float`; with
  ``relative_to: max`` rtol multiplies the tensor's largest magnitude
* ``{rel}``         norm-wise, via :func:`parity.compare.compare_norm` (gradients)
* ``{exact: true}`` exact equality, via :func:`parity.compare.compare_exact`
* ``{floor, cap, atol, rtol}`` within ``floor`` times the reference's own noise floor
  per element block (its change under a one-ulp input perturbation), via
  :func:`parity.compare.compare_floor`; a tensor whose floor exceeds ``cap`` times its
  scale is not judgeable in float32; used only when that floor was measured;
  ``norm_rel`` lets a localised change (a kink flipped by rounding) pass within that
  norm-wise budget

The first matching rule wins. Integer and boolean arrays are always compared
exactly, whatever rule matches their name.

A rule may carry ``weights: trained`` (or ``random``): it then takes part only in runs
on that kind of weights (``load_registry(weights=...)``; a pair built from a weights
file is a trained-weight run). Trained weights are not chaotic, so their float32 noise
floor is far smaller and their rules far tighter; they sit in the same ordered list,
just above the general rule they tighten, and a report names them ``PATTERN [weights: trained]``.

Qualified names: module outputs are plain module paths (``decoder.dec_bbox_head.2``);
other tensors carry a prefix: ``probe:``, ``loss:``, ``grad:``, and after optimizer
step k ``step{k}:param:``, ``step{k}:ema:``, ``step{k}:exp_avg:`` and the like.
"""
import dataclasses
import fnmatch
import os
from typing import Optional

import numpy as np
import yaml

from parity.compare import FLOOR_BLOCK, compare_exact, compare_float, compare_floor, compare_norm

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tolerances.yaml")

_ALLOWED_KEYS = {"pattern", "atol", "rtol", "relative_to", "rel", "exact", "floor", "cap", "block", "norm_rel",
                 "reason", "weights"}
DTYPES = ("float32", "float64")
WEIGHTS = ("random", "trained")


class ToleranceConfigError(ValueError):
    """A tolerance rule is malformed (missing reason, unknown key, mixed kinds...)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One registry entry: a name pattern, its thresholds and the reason for them."""
    pattern: str
    reason: str
    atol: Optional[float] = None
    rtol: Optional[float] = None
    rel: Optional[float] = None
    exact: bool = False
    floor: Optional[float] = None
    cap: Optional[float] = None
    block: object = FLOOR_BLOCK  # elements per floor block, or "tensor"
    norm_rel: Optional[float] = None  # floor rules: norm-wise budget for a localised change (a kink flip)
    relative_to: str = "element"
    weights: Optional[str] = None  # None: every run; "trained" or "random": runs on those weights only

    @property
    def name(self):
        """The pattern, and the kind of weights the rule is limited to (what reports show)."""
        return self.pattern + (f" [weights: {self.weights}]" if self.weights else "")

    @property
    def kind(self):
        """'exact', 'norm' or 'float': which comparison this rule asks for."""
        if self.exact:
            return "exact"
        if self.floor is not None:
            return "floor"
        if self.rel is not None:
            return "norm"
        return "float"

    def matches(self, name):
        return fnmatch.fnmatchcase(name, self.pattern)

    def tolerance_text(self):
        """The thresholds in words, for reports."""
        if self.kind == "exact":
            return "exact"
        if self.kind == "norm":
            return f"rel {self.rel:g} (norm-wise)"
        if self.kind == "floor":
            return (f"{self.floor:g} x reference noise floor per {self.block}-element block + atol {self.atol or 0:g} + rtol "
                    f"{self.rtol or 0:g} x max|ref|; not judgeable when the floor exceeds {self.cap:g} x max|ref|"
                    + (f"; a localised change passes within {self.norm_rel:g} norm-wise" if self.norm_rel else ""))
        return f"atol {self.atol:g}, rtol {self.rtol:g}" + (" x max|ref|" if self.relative_to == "max" else "")

    def to_dict(self):
        entry = {"pattern": self.pattern}
        if self.kind == "exact":
            entry["exact"] = True
        elif self.kind == "norm":
            entry["rel"] = self.rel
        elif self.kind == "floor":
            entry.update(floor=self.floor, cap=self.cap, block=self.block, atol=self.atol or 0.0, rtol=self.rtol or 0.0)
            if self.norm_rel is not None:
                entry["norm_rel"] = self.norm_rel
        else:
            entry.update(atol=self.atol, rtol=self.rtol)
            if self.relative_to != "element":
                entry["relative_to"] = self.relative_to
        if self.weights:
            entry["weights"] = self.weights
        entry["reason"] = self.reason
        return entry


INTEGER_RULE = Rule(
    pattern="<integer or bool dtype>", exact=True,
    reason="integers and booleans (indices, labels, masks) carry no rounding noise; "
           "any difference is a different decision")


def _tolerance_value(entry, key, where):
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ToleranceConfigError(f"{where}: {key} must be a number >= 0, got {value!r}")
    return float(value)


def parse_rule(entry, where="rule"):
    """Build a :class:`Rule` from one YAML mapping, rejecting anything ambiguous."""
    if not isinstance(entry, dict):
        raise ToleranceConfigError(f"{where}: expected a mapping, got {entry!r}")
    unknown = set(entry) - _ALLOWED_KEYS
    if unknown:
        raise ToleranceConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    pattern = entry.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ToleranceConfigError(f"{where}: 'pattern' must be a non-empty string")
    where = f"{where} ({pattern!r})"
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ToleranceConfigError(f"{where}: every rule needs a non-empty 'reason'")
    weights = entry.get("weights")
    if weights is not None and weights not in WEIGHTS:
        raise ToleranceConfigError(f"{where}: weights must be one of {WEIGHTS}, got {weights!r}")
    entry = {k: v for k, v in entry.items() if k != "weights"}
    return dataclasses.replace(_parse_thresholds(entry, pattern, reason, where), weights=weights)


def _parse_thresholds(entry, pattern, reason, where):
    """The :class:`Rule` of one entry's thresholds (pattern and reason already checked)."""

    if "floor" in entry:
        if set(entry) - {"pattern", "floor", "cap", "block", "atol", "rtol", "norm_rel", "reason"}:
            raise ToleranceConfigError(f"{where}: a floor rule takes only 'floor', 'cap', 'block', 'atol', 'rtol' "
                                       "and 'norm_rel'")
        block = entry.get("block", FLOOR_BLOCK)
        if block != "tensor" and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
            raise ToleranceConfigError(f"{where}: block must be a positive integer or 'tensor', got {block!r}")
        if "cap" not in entry:
            raise ToleranceConfigError(f"{where}: a floor rule needs a 'cap' (the floor may not excuse everything)")
        atol = _tolerance_value(entry, "atol", where) if "atol" in entry else 0.0
        rtol = _tolerance_value(entry, "rtol", where) if "rtol" in entry else 0.0
        norm_rel = _tolerance_value(entry, "norm_rel", where) if "norm_rel" in entry else None
        return Rule(pattern=pattern, reason=reason.strip(), floor=_tolerance_value(entry, "floor", where),
                    cap=_tolerance_value(entry, "cap", where), block=block, atol=atol, rtol=rtol, norm_rel=norm_rel)
    for key in ("cap", "norm_rel"):
        if key in entry:
            raise ToleranceConfigError(f"{where}: '{key}' belongs to a floor rule")
    relative_to = entry.get("relative_to", "element")
    if relative_to not in ("element", "max") or ("relative_to" in entry and "rtol" not in entry):
        raise ToleranceConfigError(f"{where}: relative_to is 'element' or 'max', with an rtol")
    has_float = "atol" in entry or "rtol" in entry
    has_norm = "rel" in entry
    has_exact = "exact" in entry
    if has_exact and entry["exact"] is not True:
        raise ToleranceConfigError(f"{where}: 'exact' may only be true")
    if has_float + has_norm + has_exact != 1:
        raise ToleranceConfigError(
            f"{where}: give exactly one of atol/rtol, rel, or exact: true")
    if has_exact:
        return Rule(pattern=pattern, reason=reason.strip(), exact=True)
    if has_norm:
        return Rule(pattern=pattern, reason=reason.strip(), rel=_tolerance_value(entry, "rel", where))
    atol = _tolerance_value(entry, "atol", where) if "atol" in entry else 0.0
    rtol = _tolerance_value(entry, "rtol", where) if "rtol" in entry else 0.0
    return Rule(pattern=pattern, reason=reason.strip(), atol=atol, rtol=rtol, relative_to=relative_to)


class Registry:
    """An ordered list of rules; the first whose pattern matches a name judges it."""

    def __init__(self, rules):
        self.rules = tuple(rules)

    @classmethod
    def from_entries(cls, entries):
        """From a list of YAML-style mappings (validated one by one)."""
        if not isinstance(entries, list) or not entries:
            raise ToleranceConfigError("'rules' must be a non-empty list")
        return cls(parse_rule(entry, f"rule {i}") for i, entry in enumerate(entries))

    @classmethod
    def from_yaml(cls, path=DEFAULT_PATH, dtype="float32", weights="random"):
        """The rules of the ``dtype`` verdict (``float32`` or ``float64``) in ``path`` that
        apply to runs on ``weights`` (``random`` or ``trained``)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
        with open(path) as handle:
            document = yaml.safe_load(handle)
        if not isinstance(document, dict) or dtype not in document:
            raise ToleranceConfigError(f"{path}: expected a top-level '{dtype}:' list of rules")
        rules = cls.from_entries(document[dtype]).rules
        return cls(rule for rule in rules if rule.weights in (None, weights))

    def lookup(self, name, with_floor=False):
        """The first rule whose pattern matches ``name``; LookupError if none does.
        Floor rules take part only ``with_floor`` (when a noise-floor run was made)."""
        for rule in self.rules:
            if rule.matches(name) and (with_floor or rule.kind != "floor"):
                return rule
        raise LookupError(f"no tolerance rule matches {name!r} (add a catch-all '*' rule)")

    def judge(self, name, ref, test, floor=None):
        """Compare ``ref`` with ``test`` under the rule for ``name``.

        Integer/bool reference arrays always get an exact comparison (under
        :data:`INTEGER_RULE` unless the matched rule is itself exact).
        """
        ref, test = np.asarray(ref), np.asarray(test)
        rule = self.lookup(name, with_floor=floor is not None)
        if rule.kind != "exact" and ref.dtype.kind in "iub":
            rule = INTEGER_RULE
        if rule.kind == "exact":
            result = compare_exact(name, ref, test)
        elif rule.kind == "norm":
            result = compare_norm(name, ref, test, rule.rel)
        elif rule.kind == "floor":
            block = max(ref.size, 1) if rule.block == "tensor" else rule.block
            result = compare_floor(name, ref, test, floor, rule.floor, rule.atol or 0.0, rule.rtol or 0.0, rule.cap,
                                   block, rule.norm_rel)
        else:
            result = compare_float(name, ref, test, rule.atol, rule.rtol, rule.relative_to)
        result.rule = rule.name
        result.reason = rule.reason
        return result


def load_registry(path=None, dtype="float32", weights="random"):
    """The ``dtype`` verdict's registry for runs on ``weights`` (``random`` or ``trained``)
    from ``path`` (default: ``parity/tolerances.yaml``)."""
    return Registry.from_yaml(path or DEFAULT_PATH, dtype, weights)
