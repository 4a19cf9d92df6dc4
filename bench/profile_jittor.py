"""Op-level profile of the Jittor port (Jittor's own profiler), next to PyTorch's.

``python -m bench.profile_jittor --model r18vd --size 640 --phases eval,train``
profiles, after a warm-up, one eval forward (batch 1) and one training step (batch 2)
with ``jt.profile_scope()``. Each kernel is attributed to a part of the model
(backbone / encoder / decoder / criterion / backward / clip / adamw, through
``jt.profile_mark``) and to a category (oneDNN conv and matmul, gathers, reductions,
float64 statistics, element-wise...). Relayed kernels (a fused conv or matmul pattern
that Jittor hands to oneDNN) are counted once, under the oneDNN op. Unless
``--no-pytorch``, ``bench.profile_pytorch`` is run in a fresh process on the same
workload. Writes ``profile_{jittor,pytorch}_<model>_<phase>.json`` and
``profile_<model>.md`` under ``--out`` (default ``reports/bench``).
"""
import json
import os
import re
import subprocess
import sys
import time

from bench import workload
from bench.profile_common import markdown_section, parse_args, summarize_ops, write_profile

PARTS = ("backbone", "encoder", "decoder")


def readable(key):
    """A short description of a Jittor kernel key: 'mkl_conv', or the fused ops with
    their operators, e.g. 'broadcast_to+binary(multiply)+reduce(add) f64'."""
    key = re.sub(r"^\[marks:[^\]]*\]", "", key)
    if _is_conv_kernel(key):
        return "kernels.conv2d" + (" backward" if _is_conv_backward(key) else "")
    if not key.startswith("«"):
        return key.split("«")[0] + (" f64" if "float64" in key else "")
    parts = []
    for seg in key.split("«opkey")[1:]:
        body = seg.split(":", 1)[1]
        kind = body.split("«")[0]
        op = re.search(r"«OP:([a-z_]+)", "«" + body.split("«", 1)[-1]) if "«OP:" in body else None
        parts.append(f"{kind}({op.group(1)})" if op and kind in ("binary", "unary", "reduce", "ternary") else kind)
    return "+".join(parts) + (" f64" if "float64" in key else "")


def _is_conv_kernel(base):
    """Whether a kernel key is ``compat.kernels.conv`` (a ``code`` op whose source is in the key)."""
    return base.startswith("code") and "rtdetr_conv" in base


def _is_conv_backward(base):
    return "convolution_backward_data" in base


def categorize(key):
    base = re.sub(r"^\[marks:[^\]]*\]", "", key)
    if _is_conv_kernel(base):
        return "conv backward (oneDNN)" if _is_conv_backward(base) else "conv (oneDNN)"
    if base.startswith("mkl_conv_backward"):
        return "conv backward (oneDNN)"
    if base.startswith("mkl_conv"):
        return "conv (oneDNN)"
    if base.startswith("mkl_matmul"):
        return "matmul (oneDNN)"
    if "float64" in base:
        return "float64 statistics (norms, losses)"
    if "reindex_reduce" in base:
        return "scatter-add (reindex_reduce: grads of gathers)"
    if "opkey" in base and "reindex" in base and "reduce" in base:
        return "reindex+reduce (conv/pool without oneDNN)"
    if "reindex" in base or base.startswith("getitem") or base.startswith("setitem"):
        return "gather / slicing (grid_sample, indexing, concat)"
    if base.startswith("code"):
        return "custom code ops (pooling, topk, sort)"
    if base.startswith("transpose"):
        return "transpose"
    if "reduce" in base:
        return "reductions (+ fused element-wise)"
    return "element-wise"


def parse_report(rep):
    """Jittor's profiler rows -> (op rows for ``summarize_ops``, relayed rows).

    A relayed row is the fused pattern (e.g. broadcast+multiply+reduce for a conv) that
    Jittor ran as a oneDNN op: its time is already in the oneDNN row (which carries no
    marks and few shapes), but it tells which part of the model and which shapes."""
    head = rep[0]
    i_count, i_total, i_avg = head.index("Count"), head.index("TotalTime"), head.index("AvgTime")
    rows, relayed = [], []
    for r in rep[1:]:
        if len(r) <= i_avg or r[0] == "Name":
            break  # the cache report that follows has another header
        marks = re.match(r"^\[marks:([^\]]*)\]", r[0])
        shapes = r[1].split("shapes:", 1)[1].strip() if "shapes:" in r[1] else ""
        row = {"name": readable(r[0]), "category": categorize(r[0]), "ms": float(r[i_total]) / 1e6,
               "count": float(r[i_count]), "shapes": shapes.replace("\n", " "),
               "marks": marks.group(1).strip(",") if marks else ""}
        if row["ms"] > 0:
            rows.append(row)
        else:
            relayed.append({**row, "ms": float(r[i_avg]) * float(r[i_count]) / 1e6})
    return rows, relayed


def marks_breakdown(rows, relayed, iters):
    """ms per iteration for each profile mark; oneDNN rows are attributed through their relays."""
    marks = {}
    relay_ms = sum(r["ms"] for r in relayed)
    onednn_ms = sum(r["ms"] for r in rows if r["name"].startswith("mkl_"))
    for r in rows + relayed:
        if r["name"].startswith("mkl_") and relay_ms > 0:
            continue
        w = onednn_ms / relay_ms if (r in relayed and relay_ms > 0) else 1.0
        for m in (r["marks"] or "(unmarked)").split(","):
            marks[m] = marks.get(m, 0.0) + r["ms"] * w / iters
    return marks


def _mark_modules(jt, model):
    for name in PARTS:
        module = getattr(model, name)
        inner = module.execute

        def execute(*a, _inner=inner, _name=name, **k):
            with jt.profile_mark(_name):
                return _inner(*a, **k)
        module.execute = execute


def _train_step(jt, engine, images, targets):
    """``Engine.train_step`` written out, each part under a profile mark."""
    from rtdetr_jittor.optim.optim import clip_grad_norm
    engine.model.train()
    engine.criterion.train()
    engine.lr_schedule.step_iteration()
    outputs = engine.model(jt.array(images), engine.to_targets(targets))
    with jt.profile_mark("criterion"):
        loss = sum(engine.criterion(outputs, engine.to_targets(targets)).values())
    loss.item()
    opt = engine.optimizer
    with jt.profile_mark("backward"):
        opt.zero_grad()
        opt.backward(loss)
    with jt.profile_mark("clip"):
        clip_grad_norm(opt, engine.clip_max_norm)
    with jt.profile_mark("adamw"):
        opt.step()
    jt.sync_all(True)


def profile_phase(args, phase):
    from rtdetr_jittor._env import backend_info, jt
    from rtdetr_jittor.engine import Engine
    engine = Engine(workload.config_path(args.model), workload.overrides(args.size))
    engine.seed_everything(0)
    batch = 1 if phase == "eval" else 2
    images = workload.images(batch, args.size)
    targets = workload.targets(batch, int(engine.cfg.get("num_classes", 80)))
    _mark_modules(jt, engine.model)
    if phase == "eval":
        engine.model.eval()

        def step():
            with jt.no_grad():
                engine.model(jt.array(images))["pred_logits"].numpy()
            jt.sync_all(True)
    else:
        engine.setup_training()
        step = lambda: _train_step(jt, engine, images, targets)  # noqa: E731
    for _ in range(args.warmup):
        step()
    with jt.profile_scope(profiler_record_shape=1) as rep:
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step()
        wall_ms = (time.perf_counter() - t0) * 1000
    rows, relayed = parse_report(rep)
    summary = summarize_ops(rows, wall_ms, args.iters)
    summary["marks_ms"] = marks_breakdown(rows, relayed, args.iters)
    summary["relayed_to_onednn"] = sorted(({**r, "ms": r["ms"] / args.iters} for r in relayed),
                                          key=lambda r: -r["ms"])
    summary["backend"] = backend_info()
    return summary


def _run_pytorch(args):
    cmd = [sys.executable, "-m", "bench.profile_pytorch", "--model", args.model, "--size", str(args.size),
           "--phases", args.phases, "--warmup", str(args.warmup), "--iters", str(args.iters),
           "--threads", str(args.threads), "--out", args.out]
    subprocess.run(cmd, check=True, cwd=workload.ROOT)


def _load(out, fw, model, phase):
    path = os.path.join(out, f"profile_{fw}_{model}_{phase}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_markdown(args, phases):
    lines = [f"# Op-level profile: {args.model} at {args.size}x{args.size}, {args.threads} threads", "",
             "Per iteration, after warm-up. Jittor: `jt.profile_scope()` (each kernel timed synchronously); "
             "PyTorch: `torch.profiler`, self CPU time per aten op. Shares are of the summed op time.", ""]
    for phase in phases:
        j, t = _load(args.out, "jittor", args.model, phase), _load(args.out, "pytorch", args.model, phase)
        lines += [f"## {phase}", ""]
        if phase == "train":
            lines += ["Parts: Jittor's backward kernels mostly carry the mark of the forward part they "
                      "differentiate (they are built from the forward graph), PyTorch's run under `backward`; "
                      "compare totals, not single rows.", ""]
        lines += ["| part | torch ms | jittor ms |", "|---|---|---|"]
        keys = sorted(set((j or {}).get("marks_ms", {})) | set((t or {}).get("marks_ms", {})))
        lines += [f"| {k} | {(t or {}).get('marks_ms', {}).get(k, float('nan')):.0f} | "
                  f"{(j or {}).get('marks_ms', {}).get(k, float('nan')):.0f} |" for k in keys]
        lines.append("")
        if j:
            lines.append(markdown_section(f"Jittor ({phase})", j, args.top))
        if t:
            lines.append(markdown_section(f"PyTorch ({phase})", t, args.top))
    path = os.path.join(args.out, f"profile_{args.model}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv=None):
    args = parse_args("jittor", argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    phases = [p for p in args.phases.split(",") if p]
    for phase in phases:
        summary = profile_phase(args, phase)
        path = write_profile(args.out, "jittor", args.model, phase, args.size, summary)
        print(f"jittor {args.model} {phase}: wall {summary['wall_ms']:.0f} ms/iter -> {path}", flush=True)
        for c in summary["categories"][:8]:
            print(f"  {c['category']:<50} {c['ms']:8.1f} ms {100 * c['share']:5.1f}%")
    if not args.no_pytorch:
        _run_pytorch(args)
    print("wrote", write_markdown(args, phases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
