"""Float32 parity and noise floors on trained weights next to random ones.

The same config (the gate config), the same synthetic images and boxes, three modes:
eval forward, training forward and backward, and optimizer steps; once with realistic
random weights, once with trained weights (``parity.trained``). Per family of tensors
(logits, boxes, other activations, losses, gradients, and after the last step the
parameters, Adam moments and EMA weights) it reports the largest ``max|diff| / scale``
(the twins' disagreement, scale = max|ref|), the largest ``floor / scale`` (the
reference's own float32 noise floor: how far it moves when its input moves by one
ulp) and how many tensors were not judgeable in float32::

    python -m parity.trained_vs_random [--images 2] [--steps 3]   # reports/parity/trained_vs_random/
"""
import argparse
import fnmatch
import json
import os
import sys
import time

import numpy as np

from rtdetr_common.files import write_text_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_COCO = os.path.join(ROOT, "fixtures", "synthetic_coco")
# Families of tensor names, first match wins; post-processed detections are judged in pixels elsewhere.
FAMILIES = (("logits", ("probe:*logits*", "probe:decoder.enc_outputs_class")),
            ("boxes", ("probe:decoder.*boxes*", "probe:decoder.enc_outputs_coord_unact", "probe:output.pred_boxes")),
            ("losses", ("loss:*", "step*:loss:*")),
            ("gradients", ("grad:*",)),
            ("parameters", ("step{last}:param:*",)),
            ("Adam moments", ("step{last}:exp_avg*",)),
            ("EMA weights", ("step{last}:ema:*",)))


def synthetic_batches(cfg, count, per_batch, size=None, root=SYNTHETIC_COCO, split="val"):
    """``count`` batches of ``per_batch`` images of the synthetic COCO fixture with their
    boxes (normalised cxcywh) and labels, through the config's eval transforms."""
    from rtdetr_common.data import CocoDetection, collate_detection
    from rtdetr_common.loops import _transform_ops, resolve_split
    img_folder, ann_file = resolve_split(root, split)
    ops = _transform_ops(cfg, "val_dataloader", size) + [{"type": "ConvertBox", "out_fmt": "cxcywh", "normalize": True}]
    dataset = CocoDetection(img_folder, ann_file, transforms=ops, contiguous_labels=True)
    batches = []
    for b in range(count):
        images, targets = collate_detection([dataset.load(b * per_batch + i) for i in range(per_batch)])
        batches.append((images, [{"labels": t["labels"], "boxes": t["boxes"]} for t in targets]))
    return batches


def family_of(name, last_step):
    """The family of a qualified tensor name; module outputs (no prefix) are "activations";
    None for what no family holds (constants, decisions, BatchNorm buffers, earlier steps)."""
    if ":" not in name:
        return "activations"
    for family, patterns in FAMILIES:
        if any(fnmatch.fnmatchcase(name, p.format(last=last_step)) for p in patterns):
            return family
    return None


def family_figures(results, last_step=None):
    """Per family, over its floor-judged tensors of ``results``: ``tensors``, ``not_judgeable``,
    ``failed``; ``max_diff_over_scale`` and ``max_floor_over_scale`` (largest over the
    judgeable tensors, None when none is) with the ``worst`` tensor's name; and
    ``median_diff_over_scale`` over all of them (what is left to say when none is judgeable)."""
    grouped = {}
    for r in results:
        family = family_of(r.name, last_step)
        if family is not None and r.kind == "floor" and r.metrics.get("scale"):
            grouped.setdefault(family, []).append(r)
    out = {}
    for family, members in grouped.items():
        judged = [r for r in members if r.verdict != "not judgeable"]
        worst = max(judged, key=lambda r: r.metrics["max_abs"] / r.metrics["scale"], default=None)
        out[family] = {
            "tensors": len(members), "not_judgeable": len(members) - len(judged),
            "failed": sum(r.verdict == "fail" for r in members),
            "max_diff_over_scale": worst.metrics["max_abs"] / worst.metrics["scale"] if worst else None,
            "worst": worst.name if worst else None,
            "max_floor_over_scale": max((r.metrics["floor_rel"] for r in judged), default=None),
            "median_diff_over_scale": float(np.median([r.metrics["max_abs"] / r.metrics["scale"] for r in members]))}
    return out


def run_counts(results):
    """How many tensors a run judged, failed and could not judge in float32 (all steps)."""
    return {"tensors": len(results), "failed": sum(r.verdict == "fail" for r in results),
            "not_judgeable": sum(r.verdict == "not judgeable" for r in results)}


def run_modes(pair, batches, steps, noise_seed=0):
    """``{mode: results}`` for eval, train (forward and backward) and ``steps`` optimizer steps."""
    from .run import compare
    from .steps import run_steps
    images, targets = batches[0]
    out = {"eval": compare(pair, "eval", images),
           "train": compare(pair, "train", images, targets, noise_seed=noise_seed, force_matcher=True)}
    out["steps"], _ = run_steps(pair, batches, steps, noise_seed=noise_seed)
    return out


def study(config, trained_state, images=2, steps=3, log=print):
    """Both kinds of weights through :func:`run_modes` on the same batches:
    ``{kind: {mode: {family: figures}}}`` and ``{kind: {mode: results}}``."""
    from rtdetr_common.config import load_config
    from .run import build_pair
    batches = synthetic_batches(load_config(config), count=2, per_batch=images)
    figures, judged = {}, {}
    for kind in ("random", "trained"):
        t0 = time.time()
        pair = build_pair(config, weights=trained_state if kind == "trained" else None)
        judged[kind] = run_modes(pair, batches, steps)
        figures[kind] = {mode: {**family_figures(results, steps), "all": run_counts(results)}
                         for mode, results in judged[kind].items()}
        log(f"[trained-vs-random] {kind} weights: {time.time() - t0:.0f} s")
    return figures, judged


def _figure(row, key):
    """A table cell: the largest figure over judgeable tensors ("none judgeable" or "-")."""
    if not row:
        return "-"
    if row[key] is None:
        return "none judgeable" if key == "max_diff_over_scale" else "-"
    return f"{row[key]:.1e}"


def render_markdown(figures, settings):
    lines = ["# Float32 parity and noise floors: trained vs random weights", "",
             f"Config `{settings['config']}`, trained weights `{settings['weights']}`; "
             f"{settings['images']} synthetic val image(s) per batch with their boxes, {settings['steps']} optimizer "
             "steps (parameters, Adam moments and EMA after the last). diff/scale: the twins' largest element "
             "difference over the tensor's max|ref|, worst judgeable tensor of the family; floor/scale: the "
             "reference's own change under a one-ulp input perturbation over max|ref|, largest of the judgeable "
             "tensors; n.j.: not judgeable in float32 (random weights: their rules; trained: the `weights: trained` "
             "rules); median: the median diff/scale over all the family's tensors.", "",
             "| mode | family | tensors | diff/scale random | diff/scale trained | median random / trained | "
             "floor/scale random | floor/scale trained | n.j. random | n.j. trained | failed random / trained |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("eval", "train", "steps"):
        families = [f for f in ["activations"] + [f for f, _ in FAMILIES]
                    if f in figures["random"][mode] or f in figures["trained"][mode]]
        for family in families:
            r = figures["random"][mode].get(family, {})
            t = figures["trained"][mode].get(family, {})
            lines.append(f"| {mode} | {family} | {t.get('tensors', r.get('tensors', 0))} | "
                         f"{_figure(r, 'max_diff_over_scale')} | {_figure(t, 'max_diff_over_scale')} | "
                         f"{r.get('median_diff_over_scale', 0):.1e} / {t.get('median_diff_over_scale', 0):.1e} | "
                         f"{_figure(r, 'max_floor_over_scale')} | {_figure(t, 'max_floor_over_scale')} | "
                         f"{r.get('not_judgeable', 0)} | {t.get('not_judgeable', 0)} | "
                         f"{r.get('failed', 0)} / {t.get('failed', 0)} |")
        r, t = figures["random"][mode]["all"], figures["trained"][mode]["all"]
        lines.append(f"| {mode} | **every tensor{' of every step' if mode == 'steps' else ''}** | {t['tensors']} | | | | | | "
                     f"{r['not_judgeable']} | {t['not_judgeable']} | {r['failed']} / {t['failed']} |")
    return "\n".join(lines) + "\n"


def write_study(figures, judged, settings, out=os.path.join("reports", "parity")):
    """Write ``<out>/trained_vs_random/report.md`` and ``figures.json``, and each run's
    tensor report (``<out>/trained_vs_random/<kind>_<mode>/``); returns the markdown path
    and the index rows (the study's first, then one per run)."""
    from .index import write_test_report
    run_dir = os.path.join(out, "trained_vs_random")
    write_text_atomic(os.path.join(run_dir, "figures.json"), json.dumps({"settings": settings, "figures": figures},
                                                                        indent=1))
    path = os.path.join(run_dir, "report.md")
    write_text_atomic(path, render_markdown(figures, settings))
    rows = []
    for kind, modes in judged.items():
        for mode, results in modes.items():
            write_test_report(rows, f"{kind}_{mode}", results, input_info={**settings, "mode": mode, "weights_kind": kind},
                              config={"path": settings["config"]}, root=run_dir)
    for row in rows:
        row["test"], row["link"] = f"trained_vs_random: {row['test']}", f"trained_vs_random/{row['link']}"
    study_row = {"test": "trained_vs_random", "label": "float32, trained and random weights",
                 "verdict": "FAIL" if any(r["verdict"] == "FAIL" for r in rows) else "PASS",
                 "total": sum(r["total"] for r in rows), "failed": sum(r["failed"] for r in rows),
                 "not_judgeable": sum(r["not_judgeable"] for r in rows), "worst_tol_ratio": None,
                 "first_divergence": None, "link": "trained_vs_random/report.md"}
    return path, [study_row] + rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m parity.trained_vs_random", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="images per batch")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
    parser.add_argument("--weights", default=None, help="trained weights (default: parity.trained's fixture)")
    parser.add_argument("--out", default=os.path.join("reports", "parity"))
    args = parser.parse_args(argv)
    from .index import add_to_index
    from .trained import CONFIG, trained_weights
    from rtdetr_convert import read_state_dict
    weights = args.weights or trained_weights()
    figures, judged = study(CONFIG, read_state_dict(weights)[0], args.images, args.steps,
                            log=lambda text: print(text, file=sys.stderr, flush=True))
    settings = {"config": os.path.relpath(CONFIG, ROOT), "weights": weights, "images": args.images, "steps": args.steps}
    path, rows = write_study(figures, judged, settings, args.out)
    for row in rows:
        add_to_index(row, args.out)
    print(open(path).read())
    return 1 if rows[0]["verdict"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
