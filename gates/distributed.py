"""The distributed gate (full form): data-parallel training on 2 ranks, per framework.

1. A short training run from scratch on 2 ranks (the train tool under ``torchrun`` or
   ``mpirun``, ``rtdetr_common.launch``): one log record per step (rank 0 alone writes)
   and finite losses.
2. Its checkpoint resumed in a single process goes where the 2-rank continuation goes:
   the L2 distance of the two continuations' weights stays within a stated multiple of
   the float32 floor (how far the single-process continuation moves when every input
   pixel moves by one ulp), as the cross-framework resume gate judges.
3. The trained weights of gate 1 evaluated on 2 ranks (detections gathered by rank 0)
   in this framework and in the other: the same AP and detections, within the eval
   gate's thresholds, and the same AP as one process (a barely trained model would
   score 0 everywhere, and its near-equal scores swap places between frameworks).

Denoising is off here: with it on, each rank builds denoising groups from its own
largest ground-truth count, so 2 ranks and one process differ by design
(``tests/test_distributed_steps.py`` measures how much). Seconds per step at 1 and 2
ranks are reported (the 2 ranks share the machine's cores with each other).
"""
import json
import os
import subprocess
import sys
from argparse import Namespace

import numpy as np

from rtdetr_common.config import deep_merge
from rtdetr_common.launch import launcher

from .checks import check, verdict
from .thresholds import DISTRIBUTED_RESUME_FLOOR_RATIO, EVAL_AP_DIFF_POINTS, EVAL_BOX_PX, EVAL_SCORE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = {"pytorch": "reference_pytorch", "jittor": "rtdetr_jittor"}
NO_DENOISING = {"RTDETRTransformer": {"num_denoising": 0}}


def tool(framework, ranks, name, settings, *args):
    """Run ``python -m <twin>.tools.<name>`` on ``ranks`` processes with the gate's config
    (training without denoising; evaluation never uses it)."""
    from .run_gates import CONFIG
    size = settings["input_size"]
    overrides = deep_merge({"HybridEncoder": {"eval_spatial_size": [size, size]},
                            "RTDETRTransformer": {"eval_spatial_size": [size, size]}}, settings["overrides"])
    if name == "train":
        overrides = deep_merge(overrides, NO_DENOISING)
    threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "2")) // ranks)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads))
    cmd = [*launcher(framework, ranks, env=env), "-m", f"{PACKAGE[framework]}.tools.{name}", "-c", CONFIG,
           "--set", json.dumps(overrides), "--input-size", str(size), "--batch-size", str(settings["batch_size"]),
           "--no-progress", *args]
    print(f"[gate] {framework}/distributed: {name} on {ranks} ranks", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}")


def step_records(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "step"]


def gate_distributed(framework, settings, data, weights, out):
    """``weights``: a trained model (gate 1's EMA weights) for the evaluation check."""
    from rtdetr_common.checkpoint_io import read_checkpoint
    from rtdetr_common.loops import run_eval

    from .run_gates import _l2_distance, _train_steps, make_engine, other, prediction_differences
    n = settings["resume_steps"]
    half, two = os.path.join(out, "half"), os.path.join(out, "two_ranks")
    tool(framework, 2, "train", settings, "--data", data, "--max-steps", str(n // 2), "--no-eval", "--output-dir", half)
    first = step_records(half)
    tool(framework, 2, "train", settings, "--data", data, "--max-steps", str(n), "--no-eval", "--output-dir", two,
         "--resume", os.path.join(half, "last.ckpt"))
    single_settings = {**settings, "overrides": deep_merge(settings["overrides"], NO_DENOISING)}
    runs = {name: _train_steps(framework, single_settings, data, os.path.join(out, name), n,
                               resume=os.path.join(half, "last.ckpt"), perturb=perturb)
            for name, perturb in (("one_process", False), ("one_process_ulp", True))}
    continued = read_checkpoint(os.path.join(two, "last.ckpt"))["model"]
    floor = _l2_distance(runs["one_process"], runs["one_process_ulp"])
    distance = _l2_distance(runs["one_process"], continued)

    one = run_eval(make_engine(framework, settings), Namespace(
        checkpoint=weights, data=data, input_size=settings["input_size"], batch_size=settings["batch_size"],
        output_dir=os.path.join(out, "eval_one_process"), progress=False))
    metrics = {}
    for fw in (framework, other(framework)):
        folder = os.path.join(out, f"eval_2ranks_in_{fw}")
        tool(fw, 2, "eval", settings, "--data", data, "--checkpoint", weights, "--output-dir", folder)
        with open(os.path.join(folder, "metrics.json")) as f:
            metrics[fw] = json.load(f)
    diff_points = abs(metrics[framework]["AP"] - metrics[other(framework)]["AP"]) * 100
    predictions = prediction_differences(*(os.path.join(out, f"eval_2ranks_in_{fw}", "predictions.json")
                                           for fw in (framework, other(framework))))
    seconds = {1: np.median([r["seconds"] for r in step_records(os.path.join(out, "one_process"))]),
               2: np.median([r["seconds"] for r in step_records(two)])}
    figures = {"ranks": 2, "steps": n, "first_losses": [round(r["loss"], 4) for r in first],
               "l2_weight_distance_one_process_vs_2_ranks": distance, "l2_float32_floor": floor,
               "distance_over_floor": round(distance / floor, 3) if floor else None,
               "AP": metrics[framework]["AP"], "AP_other_framework": metrics[other(framework)]["AP"],
               "AP_one_process": one["AP"], "AP_diff_points": round(diff_points, 4), **predictions,
               "steps_per_second_1_rank": round(1 / seconds[1], 3), "steps_per_second_2_ranks": round(1 / seconds[2], 3)}
    return verdict(figures, [
        check("one_log_record_per_step", len(first), "==", n // 2),
        check("losses_finite", bool(np.all(np.isfinite([r["loss"] for r in first]))), "==", True),
        check("l2_weight_distance_one_process_vs_2_ranks", distance, "<=", DISTRIBUTED_RESUME_FLOOR_RATIO.value * floor),
        check("AP_diff_points", diff_points, "<=", EVAL_AP_DIFF_POINTS.value),
        check("AP_diff_points_vs_one_process", abs(metrics[framework]["AP"] - one["AP"]) * 100, "<=",
              EVAL_AP_DIFF_POINTS.value),
        check("same_detection_list", predictions["same_detection_list"], "==", True),
        check("max_box_diff_px", predictions.get("max_box_diff_px"), "<=", EVAL_BOX_PX.value),
        check("max_score_diff", predictions.get("max_score_diff"), "<=", EVAL_SCORE.value)])
