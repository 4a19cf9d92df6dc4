"""The report of a user-data comparison: ``<run>/report.md`` (readable in a minute),
``<run>/summary.json`` (every figure), ``<run>/detections.json`` (both frameworks'
detections per image, written by ``parity.user_data``), and per image ``<run>/images/<image>/report.md``
(the tensor-by-tensor report, ``parity.report``) and ``<run>/<image>_detections.png``
(both frameworks' detections drawn over each other). Schema: ``parity/schema.md``
("User-data runs")."""
import datetime
import json
import os

from rtdetr_common.draw import draw_overlay
from rtdetr_common.files import write_atomic, write_text_atomic

from .compare import json_safe
from .report import build_report, write_report

SCHEMA = "parity-user-data/1"
REFERENCE_COLOUR, JITTOR_COLOUR = (31, 119, 180), (255, 127, 14)
WORST_PER_IMAGE = 3
DRAW_MIN_SIDE = 384  # small images are scaled up in the drawings so boxes and captions stay readable
DRAW_AT_LEAST = 3  # drawn per framework even when fewer detections reach the score threshold


def _stem(name):
    return os.path.splitext(name)[0].replace(os.sep, "_")


def _shown(detections, score_threshold):
    """Indices drawn: scores at or above the threshold, at least the best few."""
    order = sorted(range(len(detections)), key=lambda i: -detections.scores[i])
    return [i for k, i in enumerate(order) if detections.scores[i] >= score_threshold or k < DRAW_AT_LEAST]


def draw_image(path, image, ref_det, jt_det, agreed, label_names, score_threshold):
    """The PNG of one image: the reference's detections (blue, thick) under Jittor's
    (orange, thin), legend and agreement figures below."""
    layers = []
    for text, colour, det in (("reference (PyTorch)", REFERENCE_COLOUR, ref_det), ("Jittor", JITTOR_COLOUR, jt_det)):
        keep = _shown(det, score_threshold)
        layers.append((f"{text}: {len(keep)} of {len(det)} detections drawn (score >= {score_threshold:g}, "
                       f"at least the best {DRAW_AT_LEAST})", colour,
                       det.boxes[keep], det.labels[keep], det.scores[keep]))
    note = (f"{'agree' if agreed['agree'] else 'DISAGREE'}: {agreed['matched']}/{agreed['reference']} matched, "
            f"max box diff {agreed['max_box_diff_px']:.2g} px, max score diff {agreed['max_score_diff']:.2g}")
    drawn = draw_overlay(image.original, layers, label_names, min_side=DRAW_MIN_SIDE, note=note)
    write_atomic(path, lambda handle: drawn.save(handle, format="PNG"), binary=True)


def write_image_outputs(run_dir, image, results, ref_det, jt_det, agreed, label_names, score_threshold):
    """Write one image's tensor report and drawing; return its row of the summary."""
    stem = _stem(image.name)
    tensor_report = build_report(results, run=stem,
                                 input_info={"image": image.name, "orig_size": list(image.orig_size),
                                             "input_size": list(image.tensor.shape[1:])})
    write_report(tensor_report, os.path.join(run_dir, "images"))
    drawing = f"{stem}_detections.png"
    draw_image(os.path.join(run_dir, drawing), image, ref_det, jt_det, agreed, label_names, score_threshold)
    s, first = tensor_report["summary"], tensor_report["first_divergence"]
    return json_safe({
        "image": image.name, "image_id": image.image_id, "orig_size": list(image.orig_size),
        "input_size": list(image.tensor.shape[1:]), "verdict": s["verdict"],
        "tensors": {"total": s["total"], "failed": s["failed"], "not_judgeable": s["not_judgeable"]},
        "worst": [{"name": w["name"], "tol_ratio": w["tol_ratio"]} for w in s["worst"][:WORST_PER_IMAGE]],
        "first_divergence": first["name"] if first else None,
        "detections": agreed, "report": f"images/{stem}/report.md", "drawing": drawing})


def summary(run, rows, coco, skipped, *, config, weights, images, dtype, environment, seconds, command):
    """The summary dict of a user-data run (``summary.json``)."""
    passed = bool(rows) and all(r["verdict"] == "PASS" and r["detections"]["agree"] for r in rows)
    passed = passed and (coco is None or coco["agree"])
    totals = {"images": len(rows), "skipped": len(skipped),
              "tensors": sum(r["tensors"]["total"] for r in rows),
              "failed": sum(r["tensors"]["failed"] for r in rows),
              "not_judgeable": sum(r["tensors"]["not_judgeable"] for r in rows),
              "images_failed": sum(r["verdict"] != "PASS" for r in rows),
              "detections_agree": sum(bool(r["detections"]["agree"]) for r in rows),
              "matched": sum(r["detections"]["matched"] for r in rows),
              "detections_reference": sum(r["detections"]["reference"] for r in rows),
              "max_box_diff_px": max((r["detections"]["max_box_diff_px"] for r in rows), default=0.0),
              "max_score_diff": max((r["detections"]["max_score_diff"] for r in rows), default=0.0)}
    return json_safe({"schema": SCHEMA, "run": run,
                      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "verdict": "PASS" if passed else "FAIL", "command": command, "config": config,
                      "weights": weights, "images": images, "dtype": dtype, "totals": totals, "coco": coco,
                      "per_image": rows, "skipped": skipped, "seconds": round(seconds, 1), "environment": environment})


def _g(value):
    return f"{float(value):.3g}"


def _verdict_line(report):
    t = report["totals"]
    if not t["images"]:
        return "**Verdict: FAIL** - no image was compared."
    words = (f"{t['images']} image(s); tensors: {t['images_failed']} image(s) with a failed tensor "
             f"({t['failed']} of {t['tensors']} tensors failed, {t['not_judgeable']} not judgeable in float32); "
             f"detections agree on {t['detections_agree']} of {t['images']} image(s) ({t['matched']} of "
             f"{t['detections_reference']} matched, worst box {_g(t['max_box_diff_px'])} px, worst score "
             f"{_g(t['max_score_diff'])})")
    coco = report["coco"]
    if coco:
        words += (f"; COCO AP reference {coco['reference']['AP']:.4f} vs Jittor {coco['jittor']['AP']:.4f} "
                  f"(difference {coco['diff_points']['AP']:.4f} points)")
    return f"**Verdict: {report['verdict']}** - {words}."


def _image_table(report):
    lines = ["| image | tensors | failed / not judgeable / total | worst tensors (tol ratio) | detections "
             "matched (ref / Jittor) | unmatched (ref / Jittor, at cut-off) | max box diff px | max score diff | "
             "detections | report | drawing |", "|" + "---|" * 11]
    for r in report["per_image"]:
        d = r["detections"]
        worst = ", ".join(f"`{w['name']}` {_g(w['tol_ratio'])}" for w in r["worst"]) or "-"
        cutoff = sum(e["at_cutoff"] for e in d["unmatched_reference"] + d["unmatched_jittor"])
        lines.append(f"| {r['image']} | {r['verdict']} | {r['tensors']['failed']} / {r['tensors']['not_judgeable']} / "
                     f"{r['tensors']['total']} | {worst} | {d['matched']} ({d['reference']} / {d['jittor']}) | "
                     f"{len(d['unmatched_reference'])} / {len(d['unmatched_jittor'])} ({cutoff}) | "
                     f"{_g(d['max_box_diff_px'])} | {_g(d['max_score_diff'])} | "
                     f"{'agree' if d['agree'] else '**DISAGREE**'} | [tensors]({r['report']}) | "
                     f"[png]({r['drawing']}) |")
    return lines


def _unmatched_lines(report):
    lines = []
    for r in report["per_image"]:
        d = r["detections"]
        for side in ("reference", "jittor"):
            for e in d[f"unmatched_{side}"]:
                lines.append(f"- {r['image']}, {side} only: label {e['label']}, score {e['score']:.4g}, box "
                             f"{e['box_xyxy']}" + (" (at the top-k cut-off: excused)" if e["at_cutoff"] else ""))
        lines += [f"- {r['image']}: {p}" for p in d["problems"]]
    return lines


def render_markdown(report):
    """``report.md`` from the summary dict alone."""
    images, weights = report["images"], report["weights"]
    size = "x".join(str(v) for v in images["size"]) if images["size"] else "the config's"
    lines = [f"# Parity on user data `{report['run']}`", "", _verdict_line(report), "",
             f"Config `{report['config']}`; weights `{weights['path']}` ({weights['format']}, tolerance rules for "
             f"{weights['kind']} weights); images `{images['source']}` ({images['kind']}"
             + (f", split {images['split']}" if images["split"] else "") + f"), input size {size}; "
             f"dtype {report['dtype']}; {report['seconds']} s.", "", f"Command: `{report['command']}`", ""]
    coco = report["coco"]
    if coco:
        lines += [f"## COCO AP ({coco['images']} images)", "", "| metric | reference | Jittor | difference (points) |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {coco['reference'][k]:.4f} | {coco['jittor'][k]:.4f} | {coco['diff_points'][k]:.4f} |"
                  for k in ("AP", "AP50", "AP75")]
        lines += ["", f"Agreement: difference within {coco['tolerance_points']} AP points ({coco['tolerance_reason']}).", ""]
    lines += ["## Per image", "", "tensors: the tensor-by-tensor verdict (own decisions judged; float32 against the "
              "reference's measured noise floor); detections: each framework's own post-processed detections matched "
              "box by box (same label), differences in pixels of the original image.", ""]
    lines += _image_table(report)
    unmatched = _unmatched_lines(report)
    if unmatched:
        lines += ["", "## Unmatched detections and problems", ""] + unmatched
    if report["skipped"]:
        lines += ["", "## Skipped (unreadable)", ""] + [f"- {s}" for s in report["skipped"]]
    if report["per_image"]:
        d = report["per_image"][0]["detections"]
        lines += ["", "## Detection tolerances", "",
                  f"- box: {_g(d['box_tol_px'])} px for the first image (1e-3 px + 2e-6 x the longer image side; "
                  "see `parity/detections.py`)", f"- score: {_g(d['score_tol'])}",
                  "", "## Drawings", "", "Reference (PyTorch) in blue, thick; Jittor in orange, thin, on top.", ""]
        lines += [f"![{r['image']}]({r['drawing']})" for r in report["per_image"]]
    return "\n".join(lines) + "\n"


def write_user_report(run_dir, report):
    """Write ``summary.json`` and ``report.md`` under ``run_dir``; returns the markdown path."""
    os.makedirs(run_dir, exist_ok=True)
    write_text_atomic(os.path.join(run_dir, "summary.json"), json.dumps(report, indent=1, allow_nan=False))
    path = os.path.join(run_dir, "report.md")
    write_text_atomic(path, render_markdown(report))
    return path


def user_index_entry(report, link):
    """The run's row of ``reports/parity/index.md``."""
    worst = [w["tol_ratio"] for r in report["per_image"] for w in r["worst"][:1]]
    first = next((f"{r['image']}: {r['first_divergence']}" for r in report["per_image"] if r["first_divergence"]), None)
    t = report["totals"]
    return {"test": report["run"], "label": f"{report['dtype']}, user data", "verdict": report["verdict"],
            "total": t["tensors"], "failed": t["failed"], "not_judgeable": t["not_judgeable"],
            "worst_tol_ratio": max((float(w) for w in worst), default=None), "first_divergence": first,
            "link": link}
