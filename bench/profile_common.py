"""Shared pieces of the op-level profilers: options, the timed workload and the output.

``bench.profile_jittor`` and ``bench.profile_pytorch`` each build a model, warm it up,
profile ``--iters`` iterations of one phase (eval forward at batch 1, or a training
step at batch 2 written out as forward / criterion / backward+clip+AdamW so each part
can be attributed) and write ``profile_<framework>_<model>_<phase>.json`` under
``--out``: ``{"framework", "model", "phase", "size", "wall_ms", "total_op_ms",
"categories": [{"category", "ms", "share"}], "ops": [{"name", "category", "ms",
"share", "count", "shapes", "marks"}]}``.
"""
import argparse
import json
import os
import re

from bench.workload import ROOT


def parse_args(framework, argv=None):
    p = argparse.ArgumentParser(prog=f"python -m bench.profile_{framework}")
    p.add_argument("--model", default="r18vd")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--phases", default="eval,train")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=1, help="profiled iterations (figures are per iteration)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default=os.path.join(ROOT, "reports", "bench"))
    if framework == "jittor":
        p.add_argument("--no-pytorch", action="store_true", help="skip the PyTorch profile run for comparison")
    return p.parse_args(argv)


def summarize_ops(rows, wall_ms, iters):
    """rows: [{name, category, ms (total over iters), count, shapes, marks}] -> per-iteration
    ops sorted by time, with shares of the summed op time, and per-category totals."""
    total = sum(r["ms"] for r in rows) or 1.0
    ops = sorted(({**r, "ms": r["ms"] / iters, "count": r["count"] / iters, "share": r["ms"] / total}
                  for r in rows), key=lambda r: -r["ms"])
    cats = {}
    for r in ops:
        cats[r["category"]] = cats.get(r["category"], 0.0) + r["ms"]
    categories = [{"category": k, "ms": v, "share": v * iters / total}
                  for k, v in sorted(cats.items(), key=lambda kv: -kv[1])]
    return {"wall_ms": wall_ms / iters, "total_op_ms": total / iters, "categories": categories, "ops": ops}


def write_profile(out_dir, framework, model, phase, size, summary):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"profile_{framework}_{model}_{phase}.json")
    with open(path, "w") as f:
        json.dump({"framework": framework, "model": model, "phase": phase, "size": size, **summary}, f, indent=1)
    return path


def markdown_section(title, summary, top):
    """A Markdown section: per-category table, then the top ``top`` kernels."""
    lines = [f"### {title}", "",
             f"Wall time per iteration {summary['wall_ms']:.0f} ms; summed op time {summary['total_op_ms']:.0f} ms.", "",
             "| category | ms | share |", "|---|---|---|"]
    lines += [f"| {c['category']} | {c['ms']:.1f} | {100 * c['share']:.1f}% |" for c in summary["categories"]]
    lines += ["", "| # | kernel | category | ms | share | calls | marks | shapes |", "|---|---|---|---|---|---|---|---|"]
    for i, op in enumerate(summary["ops"][:top], 1):
        name = op["name"].replace("|", "/")
        lines.append(f"| {i} | `{name[:90]}` | {op['category']} | {op['ms']:.1f} | {100 * op['share']:.1f}% | "
                     f"{op['count']:.0f} | {op.get('marks') or ''} | {(op.get('shapes') or '').replace('|', '/')[:120]} |")
    return "\n".join(lines) + "\n"


def hot_spot(op):
    """The model-level hot spot a Jittor profile row belongs to (by kernel and shape)."""
    name, shapes, category = op["name"], op.get("shapes") or "", op["category"]
    first = shapes.split(":")[0]
    if name.startswith("mkl_conv_backward_w"):
        return "oneDNN conv backward (weights)"
    if name.startswith("mkl_conv_backward_x"):
        return "oneDNN conv backward (input)"
    if name.startswith("mkl_conv"):
        return "oneDNN conv forward"
    if name.startswith("mkl_matmul"):
        return "oneDNN matmul (Linear layers)"
    if name == "code":
        if re.match(r"\[\d+,\d+,8,32,\]", first):
            return "deformable attention kernel"
        return "jt.code kernels (pooling, project kernels)"
    if first.count(",") == 5 and "reduce" in name:
        return "attention matmul as broadcast-multiply-reduce"
    if re.match(r"\[\d+,8,\d+,\d+,\]", first):
        return "attention softmax / mask"
    if "float64" in category:
        return "norm statistics in float64 (BatchNorm/LayerNorm ops)"
    if first.count(",") == 4 and ("reduce" in name or "ternary" in name):
        return "NCHW reductions (BatchNorm, activation backward)"
    return "other element-wise"


def hot_spots(profile, top=5):
    """[(hot spot, ms per iteration, share of summed op time)] of a Jittor profile dict, largest first."""
    groups = {}
    for op in profile["ops"]:
        k = hot_spot(op)
        groups[k] = groups.get(k, 0.0) + op["ms"]
    total = profile["total_op_ms"] or 1.0
    return [(k, v, v / total) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:top]]
