"""Command line of the parity harness.

    python -m parity compare -c configs/rtdetr/rtdetr_r18vd_6x_coco.yml --mode eval|train|steps \\
        --size 480,640 --batch 2 --seed 0 --dtype float64 --out reports/
    python -m parity compare --case '{"config": ..., "mode": "train", ...}'   # what a failing test prints
    python -m parity compare -c CONFIG --weights PATH --images PATH [--split val] [--size H,W] [--limit N]
        # your weights and images: per-image tensor verdicts, detections matched, COCO AP on a COCO root
    python -m parity judge RUN_DIR [--tolerances FILE]  # judge a saved run again, offline
    python -m parity report [--latest | RUN_DIR]     # re-render report.md from report.json
    python -m parity rerun NPZ                       # rerun the saved first-diverging module
"""
import argparse
import json
import os
import shlex
import sys
import time

from rtdetr_common.errors import RtdetrError

DEFAULT_SIZE = "640"


def _environment():
    import torch
    from rtdetr_jittor._env import backend_info
    from .report import environment_info
    return environment_info(jittor_backend=backend_info(), threads={"torch": torch.get_num_threads(),
                                                                     "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")})


def _case_from_args(args):
    """The :class:`Case` the command line describes (``--case`` wins over the rest)."""
    from .cases import Case
    from .run import image_size, make_batch
    from rtdetr_common.config import load_config
    if args.case:
        return Case.from_json(args.case)
    height, width = image_size(args.size or DEFAULT_SIZE)
    num_classes = load_config(args.config)["num_classes"]
    gt_counts = [int(c) for c in args.gt_counts.split(",")] if args.gt_counts else None
    _, targets = make_batch(args.seed, args.batch, (height, width), num_classes, gt_counts)
    return Case(config=args.config, mode=args.mode, dtype=args.dtype, height=height, width=width,
                batch=args.batch, seed=args.seed, weight_seed=args.seed,
                targets=None if args.mode == "eval" else [{k: v.tolist() for k, v in t.items()} for t in targets],
                multi_scale=[int(v) for v in args.multi_scale.split(",")] if args.multi_scale else None,
                steps=args.steps, force_topk=not args.no_force_topk, force_matcher=args.force_matcher)


CAPTURES = "captures"


def _print_summary(report, path):
    s = report["summary"]
    print(f"{s['verdict']}: {s.get('passed', '?')} passed, {s.get('failed', '?')} failed, "
          f"{s.get('not_judgeable', 0)} not judgeable in float32 -> {path}")
    if report.get("first_divergence"):
        fd = report["first_divergence"]
        print(f"first divergence: {fd['name']} (module {fd['module']}): {fd['note'] or fd['metrics'].get('max_abs')}")
    for row in report.get("drift", []):
        print(f"step {row['step']}: loss ref {row['loss_ref']:.6f} jittor {row['loss_jittor']:.6f} "
              f"max param rel diff {row['max_param_rel_diff']:.3e}")
    return 0 if s["verdict"] == "PASS" else 1


def compare_command(args):
    if args.weights or args.images:
        from .user_data import user_data_command
        return user_data_command(args, _environment())
    from . import store
    from .cases import pair_for, run_case
    from .report import build_report, write_report
    from .run import save_first_divergence
    t0 = time.time()
    case = _case_from_args(args)
    pair = pair_for(case)
    run_name = args.run or (f"{os.path.splitext(os.path.basename(case.config))[0]}_{case.mode}_{case.height}x{case.width}"
                            f"_b{case.batch}_s{case.seed}_{case.dtype}")
    run_dir = os.path.join(args.out, run_name)
    captures = os.path.join(run_dir, CAPTURES)
    results, extra = run_case(case, pair, directory=captures)
    saved = {}
    if case.mode != "steps":
        saved = save_first_divergence(pair, case.mode, case.images(), case.numpy_targets(), case.seed,
                                      store.load_capture(captures, "reference"), results, run_dir,
                                      multi_scale=case.multi_scale)
    report = build_report(
        results, run=run_name,
        config={"path": case.config, "weights": f"realistic random (seed {case.weight_seed})"},
        input_info={"case": json.loads(case.to_json()), "command": case.command(),
                    "gt_counts": [len(t["labels"]) for t in case.targets or []]},
        environment=_environment(), saved_inputs=saved)
    report.update(extra)
    report["seconds"] = round(time.time() - t0, 1)
    report["captures"] = captures
    return _print_summary(report, write_report(report, args.out))


def judge_command(args):
    """Judge the captures a ``compare`` run saved, under ``--tolerances``, without the models."""
    from . import store
    from .report import build_report, load_report, write_report
    from .run import judge_run
    from .tolerances import load_registry
    captures = os.path.join(args.run_dir, CAPTURES)
    try:
        info = store.read_run(captures)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    registry = load_registry(args.tolerances, dtype=info["dtype"], weights=info.get("weights", "random"))
    results = judge_run(captures, registry, info)
    old = load_report(os.path.join(args.run_dir, "report.json"))
    run_name = args.run or f"{os.path.basename(os.path.normpath(args.run_dir))}_judged"
    report = build_report(results, run=run_name, config=old.get("config"), input_info=old.get("input"),
                          environment=old.get("environment"))
    report.update({k: old[k] for k in ("drift",) if k in old})
    report["judged"] = {"captures": captures, "tolerances": args.tolerances or "parity/tolerances.yaml"}
    return _print_summary(report, write_report(report, args.out))


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
    c.add_argument("-c", "--config", help="model config (not needed with --case)")
    c.add_argument("--case", default=None, help="a whole case as JSON (what a failing test prints)")
    c.add_argument("--mode", choices=("eval", "train", "steps"), default="eval")
    c.add_argument("--size", default=None, help=f"input size: N (square) or H,W (default {DEFAULT_SIZE}; with "
                                                "--images the config's eval size)")
    c.add_argument("--weights", default=None, help="weights file (official .pth layouts, project checkpoints) "
                                                   "for both twins; needs --images")
    c.add_argument("--images", nargs="+", default=None, help="image files, a folder, or a COCO root")
    c.add_argument("--split", default="val", choices=("train", "val"), help="the split of a COCO root")
    c.add_argument("--limit", type=int, default=None, help="compare the first N images only")
    c.add_argument("--score-threshold", type=float, default=0.3, help="detections drawn in the PNGs")
    c.add_argument("--batch", type=int, default=2)
    c.add_argument("--seed", type=int, default=0, help="seed of the images, targets, noise and weights")
    c.add_argument("--steps", type=int, default=10, help="optimizer steps in --mode steps")
    c.add_argument("--gt-counts", default=None, help="comma-separated GT boxes per image, e.g. 3,0")
    c.add_argument("--multi-scale", default=None, help="comma-separated multi-scale sizes (train/steps), e.g. 480,512")
    c.add_argument("--out", default="reports")
    c.add_argument("--run", default=None, help="run name (default: derived from the case)")
    c.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float64: the logic verdict (both twins in double precision); float32: the numerics "
                        "verdict against the reference's measured noise floor")
    c.add_argument("--no-force-topk", action="store_true", help="let the twin take its own top-k decision")
    c.add_argument("--force-matcher", action="store_true", help="impose the reference's matcher assignment")
    j = sub.add_parser("judge", help="judge a saved run again (its captures) under a tolerance file, offline")
    j.add_argument("run_dir", help="a run directory written by `compare` (holds captures/)")
    j.add_argument("--tolerances", default=None, help="tolerance registry YAML (default: parity/tolerances.yaml)")
    j.add_argument("--out", default="reports")
    j.add_argument("--run", default=None, help="name of the new report (default: <run>_judged)")
    r = sub.add_parser("report", help="re-render a report (default: the latest)")
    r.add_argument("run_dir", nargs="?")
    r.add_argument("--latest", action="store_true", help="the newest run (the default)")
    r.add_argument("--out", default="reports")
    rr = sub.add_parser("rerun", help="rerun a saved first-diverging module alone in both frameworks")
    rr.add_argument("npz")
    args = p.parse_args(argv)
    if args.command == "compare" and not (args.case or args.config):
        p.error("compare needs -c CONFIG or --case JSON")
    if args.command == "compare" and bool(args.weights) != bool(args.images):
        p.error("--weights and --images go together")
    if args.command == "compare" and args.weights and (args.case or args.mode != "eval"):
        p.error("--weights/--images compare in eval mode only (no --case, no --mode train/steps)")
    args.command_line = "python -m parity " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        return {"compare": compare_command, "judge": judge_command, "report": report_command,
                "rerun": rerun_command}[args.command](args)
    except RtdetrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
