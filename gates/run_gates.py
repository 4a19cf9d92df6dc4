"""Run the five gates for both frameworks and write ``reports/gates/summary.{json,md}``.

1. train from scratch on the synthetic set until val AP50 exceeds the target;
2. eval the result, and the same weights in the other framework (AP within 0.1 points);
3. infer on the fixture photographs (JSON and PNG written);
4. resume: N steps straight == N/2 + resume + N/2 (same framework, bit-identical);
5. cross-framework resume: a checkpoint of one framework continues in the other.

``--full`` is the real run; the default quick form (tiny images, a few steps) is what
``make test`` runs through ``tests/test_gates.py``. A gate that cannot run fails.
Both forms use ``configs/synthetic/rtdetr_r18vd_small_synthetic.yml`` (r18vd backbone,
narrow encoder/decoder). Gates 2 and 3 use the EMA weights that gate 1 scored, written
as ``train/best_ema.pkl`` (a bare state_dict both frameworks read). The summary's
schema is described in README.md ("Gate summary schema").
"""
import argparse
import json
import os
import sys
import time
import traceback
from argparse import Namespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "synthetic", "rtdetr_r18vd_small_synthetic.yml")
PHOTOS = os.path.join(ROOT, "fixtures", "photos")
FIXTURE_DATA = os.path.join(ROOT, "fixtures", "synthetic_coco")
FRAMEWORKS = ("pytorch", "jittor")

QUICK = dict(input_size=64, batch_size=2, train_steps=3, resume_steps=4, max_epochs=1, target_ap50=None,
             data_sizes=None)
FULL = dict(input_size=128, batch_size=8, train_steps=None, resume_steps=10, max_epochs=60, target_ap50=0.5,
            data_sizes=(512, 64))


def engine_class(framework):
    if framework == "pytorch":
        from reference_pytorch.engine import Engine
    else:
        from rtdetr_jittor.engine import Engine
    return Engine


def other(framework):
    return FRAMEWORKS[1 - FRAMEWORKS.index(framework)]


def make_engine(framework, settings):
    size = settings["input_size"]
    overrides = {"HybridEncoder": {"eval_spatial_size": [size, size]},
                 "RTDETRTransformer": {"eval_spatial_size": [size, size]}}
    return engine_class(framework)(CONFIG, overrides, seed=0)


def train_args(settings, data, out, max_steps, resume=None, eval_=True):
    return Namespace(data=data, epochs=settings["max_epochs"] if max_steps is None else 10 ** 6,
                     max_steps=max_steps, batch_size=settings["batch_size"], input_size=settings["input_size"],
                     output_dir=out, resume=resume, seed=0, eval_every=1, no_eval=not eval_,
                     target_ap50=settings["target_ap50"], progress=sys.stderr.isatty())


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
    from rtdetr_common.loops import train
    t0 = time.time()
    result = train(make_engine(framework, settings), train_args(settings, data, out, settings["train_steps"]))
    minutes = (time.time() - t0) / 60
    target = settings["target_ap50"]
    passed = target is None or result["best_ap50"] > target
    best = os.path.join(out, "best.ckpt" if os.path.exists(os.path.join(out, "best.ckpt")) else "last.ckpt")
    weights = export_ema_weights(best, os.path.join(out, "best_ema.pkl"))
    return {"passed": passed, "steps": result["steps"], "epochs": result["epochs"], "minutes": round(minutes, 2),
            "seconds_per_step": round(minutes * 60 / max(result["steps"], 1), 2),
            "best_ap50": result["best_ap50"], "target_ap50": target,
            "ap50_by_epoch": [[r["step"], round(r["AP50"], 4)] for r in result["history"] if "AP50" in r],
            "checkpoint": best, "weights": weights}


def gate_eval(framework, settings, data, checkpoint, out):
    from rtdetr_common.loops import run_eval
    metrics = {}
    for fw in (framework, other(framework)):
        args = Namespace(checkpoint=checkpoint, data=data, input_size=settings["input_size"],
                         batch_size=settings["batch_size"], output_dir=os.path.join(out, f"eval_in_{fw}"), progress=False)
        metrics[fw] = run_eval(make_engine(fw, settings), args)
    own, theirs = metrics[framework], metrics[other(framework)]
    diff_points = abs(own["AP"] - theirs["AP"]) * 100
    return {"passed": diff_points <= 0.1, "AP": own["AP"], "AP50": own["AP50"], "AP_other_framework": theirs["AP"],
            "AP50_other_framework": theirs["AP50"], "AP_diff_points": round(diff_points, 4),
            **prediction_differences(*(os.path.join(out, f"eval_in_{fw}", "predictions.json")
                                       for fw in (framework, other(framework))))}


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


def gate_infer(framework, settings, checkpoint, out):
    from rtdetr_common.cli import label_names_for
    from rtdetr_common.loops import run_infer
    engine = make_engine(framework, settings)
    args = Namespace(checkpoint=checkpoint, image=PHOTOS, input_size=settings["input_size"], output_dir=out,
                     score_threshold=0.3)
    results = run_infer(engine, args, label_names=label_names_for(engine.cfg, FIXTURE_DATA))
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    passed = os.path.isfile(os.path.join(out, "detections.json")) and len(pngs) == len(results) > 0
    return {"passed": passed, "images": len(results), "detections": sum(len(v) for v in results.values())}


def _train_steps(framework, settings, data, out, steps, resume=None, resume_in=None):
    from rtdetr_common.loops import train
    engine = make_engine(resume_in or framework, settings)
    train(engine, train_args(settings, data, out, steps, resume=resume, eval_=False))
    return engine.model_state()


def _max_diff(a, b):
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0
               for k in a)


def gate_resume(framework, settings, data, out):
    n = settings["resume_steps"]
    straight = _train_steps(framework, settings, data, os.path.join(out, "straight"), n)
    _train_steps(framework, settings, data, os.path.join(out, "half"), n // 2)
    resumed = _train_steps(framework, settings, data, os.path.join(out, "resumed"), n,
                           resume=os.path.join(out, "half", "last.ckpt"))
    diff = _max_diff(straight, resumed)
    return {"passed": diff == 0.0, "steps": n, "max_abs_weight_diff": diff}


def gate_cross_resume(framework, settings, data, out):
    n = settings["resume_steps"]
    half = os.path.join(out, "half")
    _train_steps(framework, settings, data, half, n // 2)
    continued = _train_steps(framework, settings, data, os.path.join(out, "continued"), n,
                             resume=os.path.join(half, "last.ckpt"), resume_in=other(framework))
    own = _train_steps(framework, settings, data, os.path.join(out, "own"), n, resume=os.path.join(half, "last.ckpt"))
    finite = all(np.all(np.isfinite(v)) for v in continued.values())
    return {"passed": finite, "continued_in": other(framework), "steps": n,
            "max_abs_weight_diff_vs_same_framework": _max_diff(own, continued)}


def prepare_data(settings, out):
    if not settings["data_sizes"]:
        return FIXTURE_DATA
    sys.path.insert(0, os.path.join(ROOT, "fixtures"))
    from make_synthetic_coco import generate
    data = os.path.join(out, "data")
    if not os.path.isfile(os.path.join(data, "annotations", "instances_val.json")):
        generate(data, num_train=settings["data_sizes"][0], num_val=settings["data_sizes"][1], size=128, seed=1)
    return data


def run_gate(name, fn, *args):
    t0 = time.time()
    try:
        result = fn(*args)
    except Exception as e:
        result = {"passed": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    result["seconds"] = round(time.time() - t0, 1)
    print(f"[gate] {name}: {'PASS' if result['passed'] else 'FAIL'} {json.dumps({k: v for k, v in result.items() if k != 'traceback'})}",
          flush=True)
    return result


def run_all(settings, out, frameworks=FRAMEWORKS):
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    data = prepare_data(settings, out)
    summary = {"mode": "full" if settings is FULL else "quick", "config": os.path.relpath(CONFIG, ROOT),
               "settings": settings, "data": data, "gates": {}}
    for fw in frameworks:
        base = os.path.join(out, fw)
        g = summary["gates"][fw] = {}
        g["train"] = run_gate(f"{fw}/train", gate_train, fw, settings, data, os.path.join(base, "train"))
        weights = g["train"].get("weights", os.path.join(base, "train", "best_ema.pkl"))
        g["eval"] = run_gate(f"{fw}/eval", gate_eval, fw, settings, data, weights, os.path.join(base, "eval"))
        g["infer"] = run_gate(f"{fw}/infer", gate_infer, fw, settings, weights, os.path.join(base, "infer"))
        g["resume"] = run_gate(f"{fw}/resume", gate_resume, fw, settings, data, os.path.join(base, "resume"))
        g["cross_resume"] = run_gate(f"{fw}/cross_resume", gate_cross_resume, fw, settings, data,
                                     os.path.join(base, "cross_resume"))
    summary["passed"] = all(r["passed"] for g in summary["gates"].values() for r in g.values())
    summary["minutes"] = round((time.time() - t0) / 60, 2)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(render_markdown(summary))
    print(render_markdown(summary))
    return summary


def render_markdown(summary):
    lines = [f"# Gates ({summary['mode']}): {'PASS' if summary['passed'] else 'FAIL'} in {summary.get('minutes', '?')} min", "",
             f"config `{summary.get('config')}`, data `{summary['data']}`", "",
             "| framework | gate | verdict | minutes | figures |", "|---|---|---|---|---|"]
    hidden = ("passed", "traceback", "checkpoint", "weights", "seconds")
    for fw, gates in summary["gates"].items():
        for name, r in gates.items():
            figures = ", ".join(f"{k}={v}" for k, v in r.items() if k not in hidden)
            minutes = round(r.get("seconds", 0) / 60, 2)
            lines.append(f"| {fw} | {name} | {'PASS' if r['passed'] else 'FAIL'} | {minutes} | {figures} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the real gates (minutes); default: quick form")
    p.add_argument("--out", default=os.path.join(ROOT, "reports", "gates"))
    p.add_argument("--framework", choices=FRAMEWORKS, action="append", help="limit to one framework")
    args = p.parse_args(argv)
    summary = run_all(FULL if args.full else QUICK, args.out, tuple(args.framework or FRAMEWORKS))
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
