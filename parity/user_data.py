"""A comparison on the user's own weights and images.

    python -m parity compare -c CONFIG --weights PATH --images PATH [--split val] \\
        [--size H,W] [--limit N] [--dtype float32]

Both twins get the weights of the file (strict key and shape checks), and every image
(through the config's evaluation transforms, see ``parity.user_images``) is compared
on its own: the tensor-by-tensor verdict of ``parity.run.compare`` (own decisions
judged, the reference's noise floor measured in float32), then the detections each
framework gives a user (``parity.detections``: matched box by box in pixels of the
original image); on a COCO root also each framework's COCO AP and their difference.
The report (``parity.user_report``) goes to ``<out>/parity/<run>/`` and into the index.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

from rtdetr_common.checkpoint_io import StateDictError
from rtdetr_common.errors import ImageError
from rtdetr_common.files import write_text_atomic

from .detections import Detections, agreement
from rtdetr_convert import align_counters, read_state_dict

from . import store
from .decisions import TOPK_SCORES
from .run import build_pair, compare, own_eval_pass

# The COCO AP of the two frameworks on the same weights and images must agree to this.
AP_TOL_POINTS = (0.1, "same weights and images: the gates measured AP equal to all printed digits in both "
                      "frameworks (difference 0.0 points, 1920 detections on 64 images)")


def eval_size_overrides(size):
    """Config overrides that make ``size`` ((height, width)) the models' eval size."""
    if size is None:
        return None
    return {"HybridEncoder": {"eval_spatial_size": list(size)}, "RTDETRTransformer": {"eval_spatial_size": list(size)}}


def build_user_pair(config, weights_path, size=None, dtype="float32"):
    """``(pair, format name)``: both twins of ``config`` (eval size ``size``) holding the
    weights of ``weights_path``; weights that do not fit raise ``StateDictError`` naming
    the file, the config and the keys."""
    state, format_name = read_state_dict(weights_path)
    if format_name == "huggingface":  # HF's published files carry no BatchNorm counters
        import reference_pytorch
        keys = reference_pytorch.build(config, eval_size_overrides(size)).model.state_dict().keys()
        state, _, _ = align_counters(state, keys)
    try:
        pair = build_pair(config, eval_size_overrides(size), dtype=dtype, weights=state)
    except StateDictError as e:
        raise StateDictError(f"{weights_path} ({format_name}) does not fit {config}: {e}") from None
    return pair, format_name


def _decisions_equal(ref_cap, jt_cap):
    """Whether the twin's own top-k decisions (recorded before forcing) are the reference's,
    so that its forced pass is also the pass it would run on its own."""
    ref_by, jt_by = ref_cap.by_name(), jt_cap.by_name()
    for probe in TOPK_SCORES:
        name = f"probe:{probe}"
        if (name in ref_by) != (name in jt_by):
            return False
        if name in ref_by and not np.array_equal(ref_by[name].value, np.asarray(jt_by[name].value).astype(np.int64)):
            return False
    return True


def compare_image(pair, image):
    """Judge one :class:`parity.user_images.UserImage`: ``(results, reference detections,
    Jittor detections, agreement)``. The Jittor detections are the ones Jittor reaches on
    its own decisions (rerun without forcing when it decided otherwise)."""
    batch = image.tensor[None].astype(np.float32)
    sizes = np.array([image.orig_size], np.float32)
    with tempfile.TemporaryDirectory(prefix="parity-image-") as directory:
        results = compare(pair, "eval", batch, orig_sizes=sizes, directory=directory)
        ref_cap, jt_cap = store.load_capture(directory, "reference"), store.load_capture(directory, "jittor")
        own = jt_cap if _decisions_equal(ref_cap, jt_cap) else own_eval_pass(pair, batch, sizes)
        ref_det, jt_det = Detections.from_capture(ref_cap), Detections.from_capture(own)
    return results, ref_det, jt_det, agreement(ref_det, jt_det, image.orig_size)


def coco_ap(image_set, detections_by_framework, image_ids):
    """COCO AP of each framework on ``image_ids`` and the difference, in points."""
    from rtdetr_common.coco_eval import evaluate_detections, detections_from_predictions
    dataset = image_set.dataset
    out = {}
    for framework, per_image in detections_by_framework.items():
        predictions = [{"labels": d.labels, "boxes": d.boxes, "scores": d.scores} for d in per_image]
        records = detections_from_predictions(predictions, image_ids, dataset.label2category)
        metrics = evaluate_detections(dataset.coco, records, image_ids)
        out[framework] = {k: metrics[k] for k in ("AP", "AP50", "AP75")}
    out["diff_points"] = {k: round(abs(out["reference"][k] - out["jittor"][k]) * 100, 6) for k in ("AP", "AP50", "AP75")}
    out["tolerance_points"], out["tolerance_reason"] = AP_TOL_POINTS
    out["agree"] = out["diff_points"]["AP"] <= AP_TOL_POINTS[0]
    out["images"] = len(image_ids)
    return out


def _progress(text):
    print(f"[parity] {text}", file=sys.stderr, flush=True)


def run_user_data(pair, image_set, run_dir, score_threshold=0.3, log=_progress):
    """Compare every image of ``image_set``; write the per-image tensor reports, the
    drawings and both frameworks' detections (``detections.json``) under ``run_dir``; return the per-image rows, the COCO AP figures (COCO root
    only, else None) and the unreadable images skipped."""
    from .user_report import write_image_outputs
    rows, skipped, image_ids, listed = [], [], [], {}
    detections = {"reference": [], "jittor": []}
    total = len(image_set)
    for i in range(total):
        t0 = time.time()
        log(f"image {i + 1}/{total} {image_set.names[i]}: comparing")
        try:
            image = image_set.load(i)
        except ImageError as e:
            log(f"image {i + 1}/{total}: skipped, unreadable ({e})")
            skipped.append(str(e))
            continue
        results, ref_det, jt_det, agreed = compare_image(pair, image)
        row = write_image_outputs(run_dir, image, results, ref_det, jt_det, agreed, image_set.label_names,
                                  score_threshold)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        detections["reference"].append(ref_det)
        detections["jittor"].append(jt_det)
        listed[image.name] = {"reference": ref_det.entries(), "jittor": jt_det.entries()}
        if image.image_id is not None:
            image_ids.append(image.image_id)
        log(f"image {i + 1}/{total} {image.name}: tensors {row['verdict']} ({row['tensors']['failed']} failed, "
            f"{row['tensors']['not_judgeable']} not judgeable of {row['tensors']['total']}); detections "
            f"{'agree' if agreed['agree'] else 'DISAGREE'} ({agreed['matched']}/{agreed['reference']} matched, "
            f"box {agreed['max_box_diff_px']:.2g} px, score {agreed['max_score_diff']:.2g}) in {row['seconds']} s")
    write_text_atomic(os.path.join(run_dir, "detections.json"), json.dumps(listed))
    coco = coco_ap(image_set, detections, image_ids) if image_set.dataset is not None and image_ids else None
    return rows, coco, skipped


def user_data_command(args, environment):
    """``python -m parity compare --weights ... --images ...``: returns the exit status
    (0 all agree, 1 a difference beyond tolerance)."""
    from rtdetr_common.config import load_config
    from .index import add_to_index
    from .run import image_size
    from .user_images import open_images
    from .user_report import summary, user_index_entry, write_user_report
    t0 = time.time()
    size = image_size(args.size) if args.size else None
    cfg = load_config(args.config)
    image_set = open_images(args.images, cfg, size, args.split, args.limit)
    _progress(f"{len(image_set)} image(s) from {image_set.source} ({image_set.kind}); building both twins")
    pair, format_name = build_user_pair(args.config, args.weights, size, args.dtype)
    stem = os.path.splitext(os.path.basename(args.config))[0]
    size_text = f"{size[0]}x{size[1]}" if size else "config-size"
    run = args.run or (f"{stem}__{os.path.splitext(os.path.basename(args.weights))[0]}__"
                       f"{os.path.basename(os.path.normpath(args.images[0]))}_{size_text}_{args.dtype}")
    root = os.path.join(args.out, "parity")
    run_dir = os.path.join(root, run)
    rows, coco, skipped = run_user_data(pair, image_set, run_dir, args.score_threshold)
    report = summary(run, rows, coco, skipped,
                     config=args.config, weights={"path": args.weights, "format": format_name, "kind": pair.weights_kind},
                     images={"source": image_set.source, "kind": image_set.kind, "split": args.split if image_set.dataset else None,
                             "count": len(image_set), "size": list(size) if size else None},
                     dtype=args.dtype, environment=environment, seconds=time.time() - t0,
                     command=args.command_line)
    path = write_user_report(run_dir, report)
    add_to_index(user_index_entry(report, f"{run}/report.md"), root)
    print(f"{report['verdict']}: {len(rows)} image(s); tensors: {report['totals']['failed']} failed, "
          f"{report['totals']['not_judgeable']} not judgeable; detections agree on "
          f"{report['totals']['detections_agree']}/{len(rows)} image(s) -> {path}")
    if coco:
        print(f"COCO AP ({coco['images']} images): reference {coco['reference']['AP']:.4f}, "
              f"Jittor {coco['jittor']['AP']:.4f}, difference {coco['diff_points']['AP']:.4f} points "
              f"(AP50 {coco['reference']['AP50']:.4f} vs {coco['jittor']['AP50']:.4f})")
    return 0 if report["verdict"] == "PASS" else 1
