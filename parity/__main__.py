"""Command line of the parity harness.

    python -m parity compare -c configs/rtdetr/rtdetr_r18vd_6x_coco.yml --mode eval|train|steps \\
        --size 640 --batch 2 --seed 0 --out reports/
    python -m parity report [--latest | RUN_DIR]     # re-render report.md from report.json
    python -m parity rerun NPZ                       # rerun the saved first-diverging module
"""
import argparse
import os
import sys
import time


def _environment():
    import torch
    from rtdetr_jittor._env import backend_info
    from .report import environment_info
    return environment_info(jittor_backend=backend_info(), threads={"torch": torch.get_num_threads(),
                                                                     "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")})


def compare_command(args):
    from .report import build_report, write_report
    from .run import build_pair, compare, make_batch, save_first_divergence
    from .steps import run_steps
    t0 = time.time()
    pair = build_pair(args.config, weight_seed=args.seed, random_weights=not args.fresh_init, dtype=args.dtype)
    num_classes = pair.ref.cfg["num_classes"]
    gt_counts = [int(c) for c in args.gt_counts.split(",")] if args.gt_counts else None
    images, targets = make_batch(args.seed, args.batch, args.size, num_classes, gt_counts)
    run_name = args.run or (f"{os.path.splitext(os.path.basename(args.config))[0]}_{args.mode}_{args.size}"
                            f"_b{args.batch}_s{args.seed}" + ("_f64" if args.dtype == "float64" else ""))
    run_dir = os.path.join(args.out, run_name)
    extra = {}
    if args.mode == "steps":
        if args.dtype != "float32":
            raise SystemExit("--mode steps runs in float32 only (the optimizers keep float32 state)")
        batches = [make_batch(args.seed + i, args.batch, args.size, num_classes, gt_counts) for i in range(args.steps)]
        results, drift = run_steps(pair, batches, args.steps, noise_seed=args.seed,
                                   floor_runs=0 if args.no_floor else 2)
        extra["drift"] = drift
        saved = {}
    else:
        results, ref_cap, _ = compare(pair, args.mode, images, targets, noise_seed=args.seed,
                                      force_topk=not args.no_force_topk, force_matcher=args.force_matcher,
                                      measure_floor=not args.no_floor)
        saved = save_first_divergence(pair, args.mode, images, targets, args.seed, ref_cap, results, run_dir)
    report = build_report(
        results, run=run_name,
        config={"path": args.config, "weights": "fresh init" if args.fresh_init else f"realistic random (seed {args.seed})"},
        input_info={"mode": args.mode, "size": args.size, "batch": args.batch, "seed": args.seed,
                    "gt_counts": [len(t["labels"]) for t in targets], "force_topk": not args.no_force_topk,
                    "force_matcher": args.force_matcher, "dtype": args.dtype, "noise_floor": not args.no_floor, "steps": args.steps if args.mode == "steps" else None},
        environment=_environment(), saved_inputs=saved)
    report.update(extra)
    report["seconds"] = round(time.time() - t0, 1)
    path = write_report(report, args.out)
    s = report["summary"]
    print(f"{s['verdict']}: {s.get('passed', '?')} passed, {s.get('failed', '?')} failed -> {path}")
    if report.get("first_divergence"):
        fd = report["first_divergence"]
        print(f"first divergence: {fd['name']} (module {fd['module']}): {fd['note'] or fd['metrics'].get('max_abs')}")
    for row in extra.get("drift", []):
        print(f"step {row['step']}: loss ref {row['loss_ref']:.6f} jittor {row['loss_jittor']:.6f} "
              f"max param rel diff {row['max_param_rel_diff']:.3e}")
    return 0 if s["verdict"] == "PASS" else 1


def report_command(args):
    from .report import latest_run, rerender
    run_dir = args.run_dir or latest_run(args.out)
    if run_dir is None:
        print(f"no parity report under {args.out}; run `python -m parity compare ...` first", file=sys.stderr)
        return 2
    path = rerender(run_dir)
    print(open(path).read())
    return 0


def rerun_command(args):
    from .rerun import rerun_saved_module
    result = rerun_saved_module(args.npz)
    print(result)
    return 0 if result["passed"] else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m parity", description="Jittor-vs-PyTorch RT-DETR parity harness")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="compare the twins on one config and input")
    c.add_argument("-c", "--config", required=True)
    c.add_argument("--mode", choices=("eval", "train", "steps"), default="eval")
    c.add_argument("--size", type=int, default=640)
    c.add_argument("--batch", type=int, default=2)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--steps", type=int, default=10, help="optimizer steps in --mode steps")
    c.add_argument("--gt-counts", default=None, help="comma-separated GT boxes per image, e.g. 3,0")
    c.add_argument("--out", default="reports")
    c.add_argument("--run", default=None, help="run name (default: derived from the arguments)")
    c.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float64 runs both twins in double precision (whole-model gradients; not with --mode steps)")
    c.add_argument("--fresh-init", action="store_true", help="compare the default initialisation (degenerate)")
    c.add_argument("--no-force-topk", action="store_true", help="let the twin take its own top-k decision")
    c.add_argument("--force-matcher", action="store_true", help="impose the reference's matcher assignment")
    c.add_argument("--no-floor", action="store_true",
                   help="skip the reference's one-ulp-perturbed run (floor rules then fall back to atol/rtol rules)")
    r = sub.add_parser("report", help="re-render a report (default: the latest)")
    r.add_argument("run_dir", nargs="?")
    r.add_argument("--latest", action="store_true", help="the newest run (the default)")
    r.add_argument("--out", default="reports")
    rr = sub.add_parser("rerun", help="rerun a saved first-diverging module alone in both frameworks")
    rr.add_argument("npz")
    args = p.parse_args(argv)
    return {"compare": compare_command, "report": report_command, "rerun": rerun_command}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
