"""Op-level profile of the PyTorch reference (``torch.profiler``), the comparison for
``bench.profile_jittor``: same model, size, inputs and phases; self CPU time per aten op.

``python -m bench.profile_pytorch --model r18vd --size 640 --phases eval,train``
"""
import sys
import time

from bench import workload
from bench.profile_common import parse_args, summarize_ops, write_profile

PARTS = ("backbone", "encoder", "decoder", "criterion", "backward", "clip", "adamw")

_CATEGORIES = (
    ("conv backward", ("convolution_backward",)),
    ("conv", ("convolution", "conv2d")),
    ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "linear")),
    ("grid_sample", ("grid_sampler",)),
    ("batch/layer norm", ("batch_norm", "layer_norm")),
    ("softmax", ("softmax",)),
    ("optimizer (foreach)", ("_foreach", "adam")),
    ("copy/layout", ("copy_", "clone", "contiguous", "cat", "stack", "index", "gather", "scatter", "permute",
                     "transpose", "as_strided", "fill_", "zero_", "empty", "to_copy", "select", "slice",
                     "upsample", "pad", "repeat", "where")),
    ("reductions", ("sum", "mean", "max", "min", "topk", "sort", "norm", "any", "all", "var")),
)


def categorize(name):
    low = name.lower()
    for cat, keys in _CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "element-wise / other"


def _marked_step(torch, engine, images, targets):
    """The Engine's training step with each part under a record_function label."""
    from reference_pytorch.optim.optim import clip_grad_norm
    rf = torch.profiler.record_function
    engine.model.train()
    engine.criterion.train()
    engine.lr_schedule.step_iteration()
    model = engine.model
    with rf("backbone"):
        feats = model.backbone(torch.from_numpy(images))
    with rf("encoder"):
        feats = model.encoder(feats)
    with rf("decoder"):
        outputs = model.decoder(feats, engine.to_targets(targets))
    with rf("criterion"):
        loss = sum(engine.criterion(outputs, engine.to_targets(targets)).values())
    with rf("backward"):
        engine.optimizer.zero_grad()
        loss.backward()
    with rf("clip"):
        clip_grad_norm(engine.optimizer, engine.clip_max_norm)
    with rf("adamw"):
        engine.optimizer.step()


def _eval_step(torch, model, images):
    rf = torch.profiler.record_function
    with torch.no_grad():
        with rf("backbone"):
            feats = model.backbone(torch.from_numpy(images))
        with rf("encoder"):
            feats = model.encoder(feats)
        with rf("decoder"):
            out = model.decoder(feats)
        return out["pred_logits"].numpy()


def profile_phase(args, phase):
    import torch
    from reference_pytorch.engine import Engine
    torch.set_num_threads(args.threads)
    engine = Engine(workload.config_path(args.model), workload.overrides(args.size))
    engine.seed_everything(0)
    batch = 1 if phase == "eval" else 2
    images = workload.images(batch, args.size)
    targets = workload.targets(batch, int(engine.cfg.get("num_classes", 80)))
    if phase == "eval":
        model = engine.model.eval()
        step = lambda: _eval_step(torch, model, images)  # noqa: E731
    else:
        engine.setup_training()
        step = lambda: _marked_step(torch, engine, images, targets)  # noqa: E731
    for _ in range(args.warmup):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step()
        wall_ms = (time.perf_counter() - t0) * 1000
    rows, marks = [], {}
    for ev in prof.key_averages(group_by_input_shape=False):
        if ev.key in PARTS:
            marks[ev.key] = ev.cpu_time_total / 1000.0 / args.iters
            continue
        if ev.self_cpu_time_total <= 0:
            continue
        rows.append({"name": ev.key, "category": categorize(ev.key), "ms": ev.self_cpu_time_total / 1000.0,
                     "count": ev.count, "shapes": "", "marks": ""})
    summary = summarize_ops(rows, wall_ms, args.iters)
    summary["marks_ms"] = marks
    summary["threads"] = torch.get_num_threads()
    return summary


def main(argv=None):
    args = parse_args("pytorch", argv)
    for phase in [p for p in args.phases.split(",") if p]:
        summary = profile_phase(args, phase)
        path = write_profile(args.out, "pytorch", args.model, phase, args.size, summary)
        print(f"torch {args.model} {phase}: wall {summary['wall_ms']:.0f} ms/iter -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
