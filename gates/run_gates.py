"""The gates' engine: run them for both frameworks and write ``summary.{json,md}``.

1. train: quick form, the loss on one fixed batch falls by a stated fraction; full
   form, from scratch on the synthetic set until val AP50 exceeds the target;
2. eval the result in this framework and in the other (same AP, same detections);
3. infer on the fixture photographs and two synthetic images (detections JSON checked
   for content);
4. resume: N steps straight == N/2 + resume + N/2 (same framework, bit-identical);
5. cross-framework resume: a checkpoint of one framework continues in the other,
   within a stated multiple of the float32 floor of the same-framework continuation;
6. (full form only) official: ``gates.official`` trains the official r18vd config in
   both frameworks from the same weights on the same batches;
7. (full form only) distributed: ``gates.distributed`` trains on 2 data-parallel ranks,
   resumes that in one process, and evaluates on 2 ranks in both frameworks.

pytest is the entry point and the verdict: ``tests/test_gates.py`` runs the quick form
(``make test``), ``tests/test_gates_full.py`` the full form (``make gates``). Every
threshold lives in ``gates.thresholds`` with its reason. Gates 1-5 use
``configs/synthetic/rtdetr_r18vd_small_synthetic.yml`` (r18vd backbone, narrow
encoder/decoder); gates 2 and 3 use the EMA weights gate 1 ends with, written as
``train/best_ema.pkl`` (a bare state_dict both frameworks read). The summary's schema
is described in README.md ("Gate summary schema").
"""
import argparse
import json
import os
import shutil
import sys
import time
import traceback
from argparse import Namespace

import numpy as np

from parity.passes import perturb_one_ulp
from rtdetr_common.files import write_text_atomic

from .checks import check, failures, verdict
from .distributed import gate_distributed
from .infer_content import infer_problems
from .official import draw_batches, gate_official
from .progress import track
from .thresholds import (CROSS_RESUME_FLOOR_RATIO, EVAL_AP_DIFF_POINTS, EVAL_BOX_PX, EVAL_SCORE,
                         INFER_MIN_DETECTIONS, RESUME_MAX_DIFF, TRAIN_LOSS_DROP)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic", "rtdetr_r18vd_small_synthetic.yml")
PHOTOS = os.path.join(ROOT, "fixtures", "photos")
FIXTURE_DATA = os.path.join(ROOT, "fixtures", "synthetic_coco")
FRAMEWORKS = ("pytorch", "jittor")
GATES = ("train", "eval", "infer", "resume", "cross_resume")

QUICK = dict(input_size=64, batch_size=2, train_steps=8, fixed_batch_size=4, resume_steps=4, max_epochs=1,
             target_ap50=None, data_sizes=None, score_threshold=0.05,
             overrides={"lr_warmup_scheduler": {"warmup_duration": 1}}, official=None, distributed=False)
FULL = dict(input_size=128, batch_size=8, train_steps=None, fixed_batch_size=None, resume_steps=10, max_epochs=60,
            target_ap50=0.5, data_sizes=(512, 64), score_threshold=0.3, overrides={},
            official=dict(input_size=128, batch_size=4, steps=30, warmup_steps=5), distributed=True)


def engine_class(framework):
    if framework == "pytorch":
        from reference_pytorch.engine import Engine
    else:
        from rtdetr_jittor.engine import Engine
    return Engine


def other(framework):
    return FRAMEWORKS[1 - FRAMEWORKS.index(framework)]


def make_engine(framework, settings, overrides=None):
    """An engine of the gate config at the settings' input size; ``overrides`` win."""
    from rtdetr_common.config import deep_merge
    size = settings["input_size"]
    base = {"HybridEncoder": {"eval_spatial_size": [size, size]},
            "RTDETRTransformer": {"eval_spatial_size": [size, size]}}
    return engine_class(framework)(CONFIG, deep_merge(deep_merge(base, settings["overrides"]), overrides), seed=0)


def steps_per_epoch(data, settings):
    from rtdetr_common.loops import resolve_split
    with open(resolve_split(data, "train")[1]) as f:
        return max(len(json.load(f)["images"]) // settings["batch_size"], 1)


def train_args(settings, data, out, max_steps, resume=None, eval_=True):
    return Namespace(data=data, epochs=settings["max_epochs"] if max_steps is None else 10 ** 6,
                     max_steps=max_steps, batch_size=settings["batch_size"], input_size=settings["input_size"],
                     output_dir=out, resume=resume, seed=0, eval_every=1, no_eval=not eval_,
                     target_ap50=settings["target_ap50"], progress=False)


def export_ema_weights(checkpoint, path):
    """Write the EMA model of a training ``checkpoint`` (the weights evaluation scored
    during training) as a bare state_dict of NumPy arrays, readable by both frameworks."""
    from rtdetr_common.checkpoint_io import CheckpointError, read_checkpoint, save_atomic
    ckpt = read_checkpoint(checkpoint)
    if not ckpt.get("ema"):
        raise CheckpointError(f"{checkpoint} holds no EMA model (use_ema is off?)")
    save_atomic(ckpt["ema"]["module"], path)
    return path


def gate_train(framework, settings, data, out):
    """Full form: train from scratch until the EMA model's val AP50 passes the target."""
    from rtdetr_common.loops import train
    t0 = time.time()
    engine = track(make_engine(framework, settings), f"{framework}/train", steps_per_epoch(data, settings))
    result = train(engine, train_args(settings, data, out, settings["train_steps"]))
    minutes = (time.time() - t0) / 60
    best = os.path.join(out, "best.ckpt" if os.path.exists(os.path.join(out, "best.ckpt")) else "last.ckpt")
    weights = export_ema_weights(best, os.path.join(out, "best_ema.pkl"))
    figures = {"steps": result["steps"], "epochs": result["epochs"], "minutes": round(minutes, 2),
               "seconds_per_step": round(minutes * 60 / max(result["steps"], 1), 2),
               "best_ap50": result["best_ap50"], "target_ap50": settings["target_ap50"],
               "ap50_by_epoch": [[r["step"], round(r["AP50"], 4)] for r in result["history"] if "AP50" in r],
               "checkpoint": best, "weights": weights}
    return verdict(figures, [check("best_ap50", result["best_ap50"], ">", settings["target_ap50"])])


def gate_train_fixed_batch(framework, settings, data, out, overrides=None):
    """Quick form: train on one fixed batch with the same denoising noise every step, so
    only learning moves the loss; it must fall by the stated fraction."""
    engine = make_engine(framework, settings, overrides)
    engine.seed_everything(0)
    engine.setup_training()
    [(images, targets)] = draw_batches(engine.cfg, data, settings["input_size"], settings["fixed_batch_size"], 1,
                                       shuffle=False)
    noise = engine.training_rng.bit_generator.state
    losses = []
    for _ in range(settings["train_steps"]):
        engine.training_rng.bit_generator.state = noise
        losses.append(engine.train_step(images, targets)["loss"])
    os.makedirs(out, exist_ok=True)
    checkpoint = os.path.join(out, "last.ckpt")
    engine.save_checkpoint(checkpoint, 0, len(losses))
    drop = 1 - losses[-1] / losses[0]
    figures = {"steps": len(losses), "losses": [round(v, 5) for v in losses], "loss_drop": round(drop, 5),
               "checkpoint": checkpoint, "weights": export_ema_weights(checkpoint, os.path.join(out, "best_ema.pkl"))}
    return verdict(figures, [check("all_losses_finite", bool(np.all(np.isfinite(losses))), "==", True),
                             check("loss_drop", drop, ">=", TRAIN_LOSS_DROP.value)])


def gate_eval(framework, settings, data, checkpoint, out):
    """The same weights evaluated in both frameworks: equal AP, and the same detections."""
    from rtdetr_common.loops import run_eval
    metrics = {}
    for fw in (framework, other(framework)):
        args = Namespace(checkpoint=checkpoint, data=data, input_size=settings["input_size"],
                         batch_size=settings["batch_size"], output_dir=os.path.join(out, f"eval_in_{fw}"), progress=False)
        metrics[fw] = run_eval(make_engine(fw, settings), args)
    own, theirs = metrics[framework], metrics[other(framework)]
    diff_points = abs(own["AP"] - theirs["AP"]) * 100
    figures = {"AP": own["AP"], "AP50": own["AP50"], "AP_other_framework": theirs["AP"],
               "AP50_other_framework": theirs["AP50"], "AP_diff_points": round(diff_points, 4),
               **prediction_differences(*(os.path.join(out, f"eval_in_{fw}", "predictions.json")
                                          for fw in (framework, other(framework))))}
    return verdict(figures, [check("AP_diff_points", diff_points, "<=", EVAL_AP_DIFF_POINTS.value),
                             check("same_detection_list", figures["same_detection_list"], "==", True),
                             check("max_box_diff_px", figures.get("max_box_diff_px"), "<=", EVAL_BOX_PX.value),
                             check("max_score_diff", figures.get("max_score_diff"), "<=", EVAL_SCORE.value)])


def prediction_differences(path_a, path_b):
    """How far two predictions files of the same images lie apart: the largest box
    coordinate (pixels) and score differences when both list the same detections
    (image and category, in order); otherwise the counts only."""
    with open(path_a) as f:
        a = json.load(f)
    with open(path_b) as f:
        b = json.load(f)
    same = len(a) == len(b) and all((p["image_id"], p["category_id"]) == (q["image_id"], q["category_id"])
                                    for p, q in zip(a, b))
    if not same:
        return {"detections": [len(a), len(b)], "same_detection_list": False}
    boxes = [abs(x - y) for p, q in zip(a, b) for x, y in zip(p["bbox"], q["bbox"])]
    scores = [abs(p["score"] - q["score"]) for p, q in zip(a, b)]
    return {"detections": len(a), "same_detection_list": True,
            "max_box_diff_px": float(max(boxes, default=0.0)), "max_score_diff": float(max(scores, default=0.0))}


def infer_inputs(data, out, shapes=2):
    """A folder with the photographs and the first ``shapes`` synthetic val images (on
    which a trained model must find something)."""
    from rtdetr_common.loops import resolve_split
    folder = os.path.join(out, "images")
    os.makedirs(folder, exist_ok=True)
    val_images = resolve_split(data, "val")[0]
    sources = [os.path.join(PHOTOS, p) for p in os.listdir(PHOTOS)]
    sources += [os.path.join(val_images, p) for p in sorted(os.listdir(val_images))[:shapes]]
    for path in sources:
        shutil.copy(path, folder)
    return folder


def gate_infer(framework, settings, data, checkpoint, out):
    """Infer on the photographs and two synthetic images; the detections JSON is
    checked for content."""
    from rtdetr_common.cli import label_names_for
    from rtdetr_common.loops import run_infer
    engine = make_engine(framework, settings)
    names = label_names_for(engine.cfg, FIXTURE_DATA)
    images = infer_inputs(data, out)
    args = Namespace(checkpoint=checkpoint, image=images, input_size=settings["input_size"], output_dir=out,
                     score_threshold=settings["score_threshold"])
    results = run_infer(engine, args, label_names=names)
    problems = infer_problems(out, images, settings["score_threshold"], names)
    detections = sum(len(v) for v in results.values())
    figures = {"images": len(results), "detections": detections, "score_threshold": settings["score_threshold"],
               "problems": problems[:10]}
    return verdict(figures, [check("content_problems", len(problems), "<=", 0),
                             check("detections", detections, ">=", INFER_MIN_DETECTIONS.value)])


def _train_steps(framework, settings, data, out, steps, resume=None, perturb=False):
    """Train ``framework`` to ``steps`` (from ``resume`` if given) without evaluation;
    ``perturb``: every batch's pixels moved by one float32 ulp. Returns the weights."""
    from rtdetr_common.loops import train
    engine = track(make_engine(framework, settings), f"{framework}/{os.path.basename(out)}",
                   steps_per_epoch(data, settings), steps)
    if perturb:
        train_step = engine.train_step
        engine.train_step = lambda images, targets: train_step(perturb_one_ulp(images), targets)
    train(engine, train_args(settings, data, out, steps, resume=resume, eval_=False))
    return engine.model_state()


def _max_diff(a, b):
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0
               for k in a)


def _l2_distance(a, b):
    """Euclidean distance between two state_dicts over their floating-point entries."""
    return float(np.sqrt(sum(np.sum((a[k].astype(np.float64) - b[k].astype(np.float64)) ** 2)
                             for k in a if a[k].dtype.kind == "f")))


def gate_resume(framework, settings, data, out):
    """N steps straight equal N/2 steps, a resume and N/2 more, bit for bit."""
    n = settings["resume_steps"]
    straight = _train_steps(framework, settings, data, os.path.join(out, "straight"), n)
    _train_steps(framework, settings, data, os.path.join(out, "half"), n // 2)
    resumed = _train_steps(framework, settings, data, os.path.join(out, "resumed"), n,
                           resume=os.path.join(out, "half", "last.ckpt"))
    diff = _max_diff(straight, resumed)
    return verdict({"steps": n, "max_abs_weight_diff": diff},
                   [check("max_abs_weight_diff", diff, "<=", RESUME_MAX_DIFF.value)])


def continue_run(framework, settings, data, out, half, perturb=False):
    """Resume ``half``'s checkpoint in ``framework`` and train to the full resume steps."""
    return _train_steps(framework, settings, data, out, settings["resume_steps"],
                        resume=os.path.join(half, "last.ckpt"), perturb=perturb)


def judge_cross_resume(own, floor_run, continued):
    """L2 distance of the other framework's continuation from this framework's, against
    the float32 floor: how far this framework's own continuation moves when every input
    pixel moves by one ulp. Arguments: state_dicts of NumPy arrays."""
    floor, distance = _l2_distance(own, floor_run), _l2_distance(own, continued)
    finite = all(np.all(np.isfinite(v)) for v in continued.values())
    figures = {"l2_weight_distance_vs_same_framework": distance, "l2_float32_floor": floor,
               "distance_over_floor": round(distance / floor, 3) if floor else None,
               "max_abs_weight_diff_vs_same_framework": _max_diff(own, continued)}
    return verdict(figures, [check("continued_weights_finite", bool(finite), "==", True),
                             check("l2_weight_distance_vs_same_framework", distance, "<=",
                                   CROSS_RESUME_FLOOR_RATIO.value * floor)])


def gate_cross_resume(framework, settings, data, out):
    """The N/2-step checkpoint continues N/2 steps in the other framework, within the
    stated multiple of the float32 floor of this framework's own continuation."""
    half = os.path.join(out, "half")
    _train_steps(framework, settings, data, half, settings["resume_steps"] // 2)
    runs = {"own": continue_run(framework, settings, data, os.path.join(out, "own"), half),
            "floor_run": continue_run(framework, settings, data, os.path.join(out, "own_ulp"), half, perturb=True),
            "continued": continue_run(other(framework), settings, data, os.path.join(out, "continued"), half)}
    result = judge_cross_resume(**runs)
    result.update({"continued_in": other(framework), "steps": settings["resume_steps"]})
    return result


def prepare_data(settings, out):
    if not settings["data_sizes"]:
        return FIXTURE_DATA
    sys.path.insert(0, os.path.join(ROOT, "fixtures"))
    from make_synthetic_coco import generate
    data = os.path.join(out, "data")
    if not os.path.isfile(os.path.join(data, "annotations", "instances_val.json")):
        generate(data, num_train=settings["data_sizes"][0], num_val=settings["data_sizes"][1], size=128, seed=1)
    return data


def _attempt(fn, *args):
    """``fn(*args)``, or a failed result holding the exception and its traceback."""
    try:
        return fn(*args)
    except Exception as e:
        return {"passed": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def _announce(name, result):
    shown = {k: v for k, v in result.items() if k not in ("traceback", "checks")}
    print(f"[gate] {name}: {'PASS' if result['passed'] else 'FAIL'} {json.dumps(shown, default=str)}", flush=True)


def run_gate(name, fn, *args):
    print(f"[gate] {name}: running", file=sys.stderr, flush=True)
    t0 = time.time()
    result = _attempt(fn, *args)
    result["seconds"] = round(time.time() - t0, 1)
    _announce(name, result)
    return result


def run_official(settings, data):
    """Gate 6 for both frameworks at once: ``{framework: result}``."""
    print("[gate] official: running", file=sys.stderr, flush=True)
    t0 = time.time()
    results = _attempt(gate_official, settings, data)
    if "error" in results:
        results = {fw: dict(results) for fw in FRAMEWORKS}
    for fw in FRAMEWORKS:
        results[fw]["seconds"] = round((time.time() - t0) / len(FRAMEWORKS), 1)
        _announce(f"{fw}/official", results[fw])
    return results


def run_framework(fw, settings, data, base):
    train_gate = gate_train_fixed_batch if settings["fixed_batch_size"] else gate_train
    g = {"train": run_gate(f"{fw}/train", train_gate, fw, settings, data, os.path.join(base, "train"))}
    weights = g["train"].get("weights", os.path.join(base, "train", "best_ema.pkl"))
    g["eval"] = run_gate(f"{fw}/eval", gate_eval, fw, settings, data, weights, os.path.join(base, "eval"))
    g["infer"] = run_gate(f"{fw}/infer", gate_infer, fw, settings, data, weights, os.path.join(base, "infer"))
    g["resume"] = run_gate(f"{fw}/resume", gate_resume, fw, settings, data, os.path.join(base, "resume"))
    g["cross_resume"] = run_gate(f"{fw}/cross_resume", gate_cross_resume, fw, settings, data,
                                 os.path.join(base, "cross_resume"))
    if settings["distributed"]:
        g["distributed"] = run_gate(f"{fw}/distributed", gate_distributed, fw, settings, data, weights,
                                    os.path.join(base, "distributed"))
    return g


def run_all(settings, out, frameworks=FRAMEWORKS):
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    data = prepare_data(settings, out)
    summary = {"mode": "quick" if settings["fixed_batch_size"] else "full", "config": os.path.relpath(CONFIG, ROOT),
               "settings": settings, "data": data, "gates": {}}
    for fw in frameworks:
        summary["gates"][fw] = run_framework(fw, settings, data, os.path.join(out, fw))
    if settings["official"] and tuple(frameworks) == FRAMEWORKS:
        for fw, result in run_official(settings["official"], data).items():
            summary["gates"][fw]["official"] = result
    summary["passed"] = all(r["passed"] for g in summary["gates"].values() for r in g.values())
    summary["minutes"] = round((time.time() - t0) / 60, 2)
    write_text_atomic(os.path.join(out, "summary.json"), json.dumps(summary, indent=1, default=str))
    write_text_atomic(os.path.join(out, "summary.md"), render_markdown(summary))
    return summary


def render_markdown(summary):
    lines = [f"# Gates ({summary['mode']}): {'PASS' if summary['passed'] else 'FAIL'} in {summary.get('minutes', '?')} min", "",
             f"config `{summary.get('config')}`, data `{summary['data']}`", "",
             "| framework | gate | verdict | minutes | failed thresholds | figures |", "|---|---|---|---|---|---|"]
    hidden = ("passed", "traceback", "checkpoint", "weights", "seconds", "checks")
    for fw, gates in summary["gates"].items():
        for name, r in gates.items():
            figures = ", ".join(f"{k}={v}" for k, v in r.items() if k not in hidden)
            minutes = round(r.get("seconds", 0) / 60, 2)
            failed = "; ".join(failures(r)) or "-"
            lines.append(f"| {fw} | {name} | {'PASS' if r['passed'] else 'FAIL'} | {minutes} | {failed} | {figures} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the real gates (minutes); default: quick form")
    p.add_argument("--out", default=os.path.join(ROOT, "reports", "gates"))
    p.add_argument("--framework", choices=FRAMEWORKS, action="append", help="limit to one framework")
    args = p.parse_args(argv)
    summary = run_all(FULL if args.full else QUICK, args.out, tuple(args.framework or FRAMEWORKS))
    print(render_markdown(summary))
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
