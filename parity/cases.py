"""One whole-model comparison, fully described: a :class:`Case`.

A case names the config, the mode (``eval``, ``train`` or ``steps``), the dtype of the
verdict, the input size (height and width independently), the seeds of the images,
the weights and the denoising noise, the ground truth of every image, the multi-scale
sizes and the forcing switches. It serialises to one JSON line, so a failing case
(drawn by hypothesis, say) prints the command that reproduces it::

    python -m parity compare --case '{"config": ..., "mode": "train", ...}'

``run_case`` builds (or reuses) the pair and returns the judged results.
"""
import dataclasses
import json
import shlex
from typing import Optional

import numpy as np

from .run import build_pair, compare
from .steps import run_steps


@dataclasses.dataclass
class Case:
    config: str
    mode: str = "eval"
    dtype: str = "float32"
    height: int = 64
    width: int = 64
    batch: int = 1
    seed: int = 0
    weight_seed: int = 0
    # Per image: {"labels": [int, ...], "boxes": [[cx, cy, w, h], ...]} (normalised cxcywh).
    targets: Optional[list] = None
    multi_scale: Optional[list] = None
    steps: int = 2
    force_topk: bool = True
    force_matcher: bool = False

    def __post_init__(self):
        if self.mode not in ("eval", "train", "steps"):
            raise ValueError(f"mode must be eval, train or steps, not {self.mode!r}")
        if self.targets is not None and len(self.targets) != self.batch:
            raise ValueError(f"{len(self.targets)} targets for a batch of {self.batch}")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))

    def command(self):
        """The shell command that reruns this case and writes its report."""
        return f"python -m parity compare --case {shlex.quote(self.to_json())}"

    def images(self, offset=0):
        rng = np.random.default_rng(self.seed + offset)
        return rng.random((self.batch, 3, self.height, self.width), dtype=np.float32)

    def numpy_targets(self):
        if self.targets is None:
            return None
        return [{"labels": np.asarray(t["labels"], np.int64).reshape(-1),
                 "boxes": np.asarray(t["boxes"], np.float32).reshape(-1, 4)} for t in self.targets]


_PAIRS = {}


def pair_for(case):
    """The pair for ``case``'s config, dtype and weights (built once per process)."""
    key = (case.config, case.dtype, case.weight_seed)
    if key not in _PAIRS:
        _PAIRS[key] = build_pair(case.config, weight_seed=case.weight_seed, dtype=case.dtype)
    return _PAIRS[key]


def run_case(case, pair=None, directory=None):
    """Judge ``case``: returns (results, extra), where ``extra`` holds the per-step drift
    table (``steps``). Float32 cases measure the reference's noise floor. The captures
    are saved under ``directory`` when given (for ``python -m parity judge``)."""
    pair = pair or pair_for(case)
    targets = case.numpy_targets()
    floor = case.dtype == "float32"
    if case.mode == "steps":
        batches = [(case.images(offset=k), targets) for k in range(case.steps)]
        results, drift = run_steps(pair, batches, case.steps, noise_seed=case.seed,
                                   floor_runs=2 if floor else 0, multi_scale=case.multi_scale, directory=directory)
        return results, {"drift": drift}
    results = compare(pair, case.mode, case.images(), targets, noise_seed=case.seed, force_topk=case.force_topk,
                      force_matcher=case.force_matcher, measure_floor=floor, multi_scale=case.multi_scale,
                      directory=directory)
    return results, {}
