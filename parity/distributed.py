"""Data-parallel optimizer steps compared: launch the ranks, judge what each wrote.

A :class:`DistributedCase` describes global batches (images and targets from one seed),
realistic random weights and the number of ranks. ``run_distributed_case`` trains on
them four times, each run in its own processes (``parity.dp_worker``): the reference
in one process and under ``torchrun`` with N ranks, the Jittor twin in one process and
under ``mpirun`` with N ranks. Then, tensor by tensor with the parity registry:

- **within a framework**: every rank's state after each step (all ranks hold the same
  weights) against the one-process run on the same global batches;
- **across frameworks**: rank r of the N-rank Jittor run against rank r of the N-rank
  reference run (each rank's shard differs, so each rank is judged; its report says which).

Float32 judges against a noise floor: the drift of the same run's state when every
input pixel moves by one ulp (``floor_runs`` copies; the one-process run's for the
within-framework comparison, the reference's N-rank run's across frameworks). Float64
is the logic verdict; there the Jittor runs take the reference's float32-built
constants (position embedding, anchors) as ``parity.steps`` does.

What the official recipe itself makes differ between N ranks and one process: the
denoising groups follow each rank's own largest ground-truth count (and their loss
normaliser its group count), and each rank draws its own noise and multi-scale size.
A case has ``denoising`` off and one fixed size unless it says otherwise.
"""
import dataclasses
import json
import os
import pickle
import shlex
import subprocess
import sys
from typing import Optional

import numpy as np

from rtdetr_common.checkpoint_io import save_atomic
from rtdetr_common.launch import launcher

from . import store
from .judge import judge_captures, noise_floors
from .run import make_batch
from .tolerances import load_registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("pytorch", "jittor")


@dataclasses.dataclass
class DistributedCase:
    config: str
    dtypes: tuple = ("float64", "float32")
    size: int = 64
    batch: int = 4  # global
    steps: int = 1
    ranks: int = 2
    seed: int = 0  # images and targets (step k uses seed + k)
    weight_seed: int = 0
    noise_seed: int = 0
    denoising: bool = False
    multi_scale: Optional[list] = None
    gt_counts: Optional[list] = None  # per image of every global batch; None: drawn from the seed
    floor_runs: int = 2  # float32 only

    def __post_init__(self):
        self.dtypes = tuple(self.dtypes)
        if not self.dtypes or set(self.dtypes) - {"float32", "float64"}:
            raise ValueError(f"dtypes must be float32 and/or float64, not {self.dtypes!r}")
        if self.ranks < 2 or self.batch % self.ranks:
            raise ValueError(f"a global batch of {self.batch} does not split evenly over {self.ranks} ranks (>= 2)")

    def overrides(self):
        size = [self.size, self.size]
        decoder = {"eval_spatial_size": size}
        if not self.denoising:
            decoder["num_denoising"] = 0
        return {"HybridEncoder": {"eval_spatial_size": size}, "RTDETRTransformer": decoder}

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    def command(self):
        """The shell command that reruns this case."""
        return f"python -m parity.distributed {shlex.quote(self.to_json())}"


def prepare(case, folder):
    """Write ``case.pkl`` (config, overrides, dtypes, weights, global batches) under ``folder``."""
    import reference_pytorch
    from .weights import realistic_random_state, torch_shapes
    ref = reference_pytorch.build(case.config, case.overrides())
    batches = [make_batch(case.seed + k, case.batch, case.size, ref.cfg["num_classes"], case.gt_counts)
               for k in range(case.steps)]
    payload = {"config": case.config, "overrides": case.overrides(), "dtypes": list(case.dtypes),
               "noise_seed": case.noise_seed, "multi_scale": case.multi_scale, "batches": batches,
               "weights": realistic_random_state(torch_shapes(ref.model), case.weight_seed)}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "case.pkl")
    save_atomic(payload, path)
    return path


def launch(framework, ranks, case_path, out_prefix, forced=None, floor_runs=0, threads=None, timeout=1200):
    """Run ``parity.dp_worker`` on ``ranks`` processes; returns their outputs in rank order."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = str(threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "2")) // ranks))
    cmd = [*launcher(framework, ranks, env=env), "-m", "parity.dp_worker", framework, case_path, out_prefix,
           "--floor-runs", str(floor_runs)] + (["--forced", forced] if forced else [])
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} on {ranks} rank(s) failed (exit {done.returncode}): {shlex.join(cmd)}\n"
                           f"{(done.stdout + done.stderr)[-4000:]}")
    outputs = []
    for rank in range(ranks):
        with open(f"{out_prefix}_rank{rank}.pkl", "rb") as f:
            outputs.append(pickle.load(f))
    return outputs


def floors_of(output):
    """Per-tensor noise floor: the largest drift of the perturbed copies from the run's state."""
    if not output["floor_states"]:
        return None
    return dict(noise_floors(store.capture_from_arrays(output["state"]),
                             [store.capture_from_arrays(perturbed) for perturbed in output["floor_states"]]))


def judge(reference, test, registry, floors=None):
    """``parity.compare.Result`` per tensor of ``test``'s state against ``reference``'s."""
    return updates_follow_gradients(judge_captures(store.capture_from_arrays(reference["state"]),
                                                   store.capture_from_arrays(test["state"]), registry, floors))


def updates_follow_gradients(results):
    """AdamW moves a parameter by lr x exp_avg / (sqrt(exp_avg_sq) + eps), at step 1 by
    nearly lr x the sign of its gradient, so a gradient element at rounding level can flip
    its update by 2 lr (seen: 3 elements of a decoder FFN weight across frameworks, whose
    exp_avg was not judgeable). Where a parameter's ``exp_avg`` is not judgeable in float32,
    its value and EMA after the step are not either: their float64 verdict decides, as
    gradients follow the forward pass (``parity.judge.gradients_follow_forward``)."""
    unjudged = {r.name.replace(":exp_avg:", ":", 1) for r in results
                if ":exp_avg:" in r.name and r.verdict == "not judgeable"}
    for r in results:
        step, _, rest = r.name.partition(":")
        kind, _, param = rest.partition(":")
        if kind in ("param", "ema") and r.kind == "floor" and f"{step}:{param}" in unjudged:
            r.passed, r.judgeable = False, False
            r.note = ("not judgeable in float32: its gradient (exp_avg) is not, and the AdamW update follows "
                      "the gradient's sign; the float64 verdict decides"
                      + (f" (beyond its floor allowance {r.metrics.get('tol_ratio', 0):.3g}x)"
                         if r.metrics.get("n_outside") else ""))
    return results


def _pairs(reference, test, part):
    """``(a, b)`` float64 arrays of the state tensors whose name holds ``part`` (same size only:
    denoising boxes of different group counts are left out)."""
    for name, value in reference["state"].items():
        if part in name and name in test["state"] and np.asarray(value).dtype.kind == "f":
            a, b = np.asarray(value, np.float64), np.asarray(test["state"][name], np.float64)
            if a.size == b.size:
                yield a, b.reshape(a.shape)


def largest_relative_difference(reference, test, part):
    """The largest ``max|a - b| / max|a|`` over the state tensors whose name holds ``part``."""
    return max((float(np.abs(a - b).max()) / (float(np.abs(a).max()) or 1.0)
                for a, b in _pairs(reference, test, part)), default=0.0)


def l2_relative_difference(reference, test, part):
    """``||a - b|| / ||a||`` over all state tensors whose name holds ``part``, taken as one vector."""
    pairs = list(_pairs(reference, test, part))
    diff = sum(float(np.sum((a - b) ** 2)) for a, b in pairs)
    scale = sum(float(np.sum(a ** 2)) for a, _ in pairs)
    return (diff / scale) ** 0.5 if scale else 0.0


def figures(reference, test):
    """Summary differences of two states: the loss and gradient norm (relative), the
    averaged gradient (all ``exp_avg`` after step 1, a tenth of it, as one vector, L2
    relative), and the largest per-tensor relative difference of the parameters and of
    the BatchNorm buffers."""
    return {"loss": largest_relative_difference(reference, test, ":loss:total"),
            "grad_norm": largest_relative_difference(reference, test, ":grad_norm"),
            "gradient_l2": l2_relative_difference(reference, test, ":exp_avg:"),
            "param": largest_relative_difference(reference, test, ":param:"),
            "buffer": largest_relative_difference(reference, test, ":buffer:")}


ALL_RUNS = (("pytorch", 1), ("jittor", 1), ("pytorch", 2), ("jittor", 2))


def run_distributed_case(case, folder, runs=ALL_RUNS):
    """Run ``runs`` (``(framework, ranks)``, ranks 2 meaning ``case.ranks``; a Jittor run
    after the reference's of the same ranks, whose float64 constants it takes) under
    ``folder``; returns ``{(framework, ranks): {dtype: [output per rank]}}``."""
    case_path = prepare(case, folder)
    outputs = {}
    for framework, ranks in runs:
        ranks = 1 if ranks == 1 else case.ranks
        prefix = os.path.join(folder, f"{framework}{ranks}")
        forced = (os.path.join(folder, f"pytorch{ranks}") if framework == "jittor" and ("pytorch", ranks) in outputs
                  else None)
        # floors: the one-process runs' (within a framework), the reference's N-rank run's (across)
        floor_runs = case.floor_runs if ranks == 1 or framework == "pytorch" else 0
        per_rank = launch(framework, ranks, case_path, prefix, forced=forced, floor_runs=floor_runs)
        outputs[(framework, ranks)] = {dtype: [o[dtype] for o in per_rank] for dtype in case.dtypes}
    return outputs


def within_framework(case, outputs, framework, dtype, judged=True, ranks=None):
    """``[(label, results, figures)]``: each rank in ``ranks`` (default all) of the N-rank
    run against the one-process run (``judged=False``: figures only, results empty)."""
    registry = load_registry(dtype=dtype)
    single = outputs[(framework, 1)][dtype][0]
    return [(f"{framework}_{case.ranks}ranks_vs_1__rank{o['rank']}__{dtype}",
             judge(single, o, registry, floors_of(single)) if judged else [], {"rank": o["rank"], **figures(single, o)})
            for o in outputs[(framework, case.ranks)][dtype] if ranks is None or o["rank"] in ranks]


def across_frameworks(case, outputs, dtype):
    """``[(label, results, figures)]``: rank r of the N-rank Jittor run against rank r of the reference's."""
    registry = load_registry(dtype=dtype)
    return [(f"jittor_vs_pytorch_{case.ranks}ranks__rank{ref['rank']}__{dtype}",
             judge(ref, test, registry, floors_of(ref)), {"rank": ref["rank"], **figures(ref, test)})
            for ref, test in zip(outputs[("pytorch", case.ranks)][dtype], outputs[("jittor", case.ranks)][dtype])]


def comparisons(case, outputs):
    """Every comparison the runs in ``outputs`` allow, for every dtype of ``case``."""
    out = []
    for dtype in case.dtypes:
        for framework in FRAMEWORKS:
            if (framework, 1) in outputs and (framework, case.ranks) in outputs:
                out.extend(within_framework(case, outputs, framework, dtype))
        if ("pytorch", case.ranks) in outputs and ("jittor", case.ranks) in outputs:
            out.extend(across_frameworks(case, outputs, dtype))
    return out


def main(argv=None):
    import tempfile
    case = DistributedCase(**json.loads((argv or sys.argv[1:])[0]))  # the JSON of DistributedCase.to_json
    with tempfile.TemporaryDirectory() as folder:
        outputs = run_distributed_case(case, folder)
        failed = 0
        for label, results, figures in comparisons(case, outputs):
            bad = [r for r in results if r.verdict == "fail"]
            failed += len(bad)
            print(f"{label}: {len(results)} tensors, {len(bad)} failed, "
                  f"{sum(r.verdict == 'not judgeable' for r in results)} not judgeable, "
                  f"max rel diff {', '.join(f'{k} {v:.3g}' for k, v in figures.items() if k != 'rank')}"
                  + (f"; first failure {bad[0].name}: {bad[0].note}" if bad else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
