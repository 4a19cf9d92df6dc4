"""``python -m bench.run``: Jittor vs PyTorch speed and memory, interleaved (``make bench``).

For each model and phase (eval at batch 1; deploy: eval at batch 1 after the official
``model.deploy()``, RepVGG branches fused, in both frameworks; a training step at batch 2) one worker
process per configuration (PyTorch; Jittor with oneDNN; Jittor without oneDNN where
asked) is started and brought to a warm state one after the other, then the timed
iterations alternate between the live workers (A B C, C B A, A B C, ...), so
machine drift falls on all of them alike. Each process reports its own peak RSS.
Threads are pinned through OMP_NUM_THREADS/MKL_NUM_THREADS and
``torch.set_num_threads``; Jittor's own fused CPU kernels are single-threaded in
1.3.11, its oneDNN ops and the project's OpenMP kernels follow OMP_NUM_THREADS. The
Jittor compile times from an empty cache (``bench.cold``) are measured last unless
``--no-cold`` or ``--quick``. Writes ``bench.json`` and ``bench.md``.
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

from bench import report
from bench.cold import FreshJittorHome
from bench.procs import Worker, WorkerFailed
from bench.stats import ratio, summarize
from bench.workload import ROOT, model_tag


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="r18vd,r50vd", help="comma-separated: r18vd, r34vd, r50vd, r101vd or config paths")
    p.add_argument("--phases", default="eval,deploy,train",
                   help="eval, deploy (eval after the official model.deploy() in both frameworks), train")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--repeats", type=int, default=10, help="timed warm eval runs per configuration")
    p.add_argument("--train-repeats", type=int, default=5, help="timed warm training steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed eval runs after the first iteration")
    p.add_argument("--train-warmup", type=int, default=1, help="untimed training steps after the first one")
    p.add_argument("--eval-batch", type=int, default=1)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    p.add_argument("--frameworks", default="pytorch,jittor")
    p.add_argument("--nomkl-models", default="r18vd", help="models also measured with Jittor's oneDNN off ('' for none)")
    p.add_argument("--nomkl-phases", default="eval", help="phases measured with oneDNN off (a training step takes minutes)")
    p.add_argument("--nomkl-repeats", type=int, default=2, help="timed runs with oneDNN off (no warm-up after the first)")
    p.add_argument("--cold", dest="cold", action="store_true", default=True,
                   help="measure Jittor's compile times from an empty cache (the default; minutes)")
    p.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold-cache measurement")
    p.add_argument("--quick", action="store_true", help="r18vd, 3 repeats, 1 warm-up, oneDNN on only, no cold")
    p.add_argument("--out", default=os.path.join(ROOT, "reports", "bench"))
    p.add_argument("--note", default="", help="free text stored in the report (e.g. 'machine shared')")
    args = p.parse_args(argv)
    if args.quick:
        args.models = "r18vd" if args.models == p.get_default("models") else args.models
        args.repeats, args.train_repeats = min(args.repeats, 3), min(args.train_repeats, 2)
        args.warmup, args.train_warmup = min(args.warmup, 1), min(args.train_warmup, 1)
        args.nomkl_models, args.cold = "", False
    return args


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def worker_env(threads, onednn=None, base=None):
    env = dict(base if base is not None else os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("log_silent", "1")
    if onednn is not None:
        env["use_mkl"] = "1" if onednn else "0"
    return env


def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model or platform.processor(), "platform": platform.platform(),
            "python": platform.python_version()}


def cpu_busy_s():
    """(busy CPU seconds of the whole machine, of this process and its finished children)."""
    import resource
    ours = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK"), ours
    except (OSError, ValueError, IndexError):
        return None, ours


def other_load(start, end, wall_s):
    """Average number of cores busy with other processes' work during the run (None if unknown)."""
    if start[0] is None or end[0] is None or wall_s <= 0:
        return None
    return round(max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / wall_s, 2)


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _configs(args, model, phase):
    """(framework, onednn, repeats, warm-up) of every worker in one interleaved group."""
    reps, warm = (args.repeats, args.warmup) if phase != "train" else (args.train_repeats, args.train_warmup)
    out = []
    for fw in _split(args.frameworks):
        if fw == "pytorch":
            out.append(("pytorch", None, reps, warm))
        elif fw == "jittor":
            out.append(("jittor", True, reps, warm))
            if model in _split(args.nomkl_models) and phase in _split(args.nomkl_phases):
                out.append(("jittor", False, args.nomkl_repeats, 0))
    return out


def _result(spec, onednn, worker=None, ready=None, done=None, error=None):
    times = list(worker.times_ms) if worker else []
    cpu = summarize(list(worker.cpu_times_ms) if worker else [])
    ready, done = ready or {}, done or {}
    info = {k: v for k, v in ready.items() if k not in ("event", "first_ms", "warmup_ms", "import_s", "build_s")}
    return {"model": spec["model"], "phase": spec["phase"], "framework": spec["framework"], "onednn": onednn,
            "batch": spec["batch"], "size": spec["size"], "times_ms": times, **summarize(times),
            "cpu_times_ms": list(worker.cpu_times_ms) if worker else [], "cpu_median_ms": cpu["median_ms"],
            "warmup_ms": ready.get("warmup_ms"), "first_ms": ready.get("first_ms"), "import_s": ready.get("import_s"),
            "build_s": ready.get("build_s"), "peak_rss_mb": done.get("peak_rss_mb"), "info": info, "error": error}


def run_group(args, model, phase, work, log_dir):
    """Start the group's workers one by one, then interleave their timed iterations."""
    batch = args.eval_batch if phase != "train" else args.train_batch
    live, results = [], []
    for fw, onednn, repeats, warmup in _configs(args, model, phase):
        tag = f"{model_tag(model)}_{phase}_{fw}" + ("" if onednn is None else ("_onednn" if onednn else "_noonednn"))
        spec = {"framework": fw, "model": model, "size": args.size, "phase": phase, "batch": batch,
                "threads": args.threads, "warmup": warmup,
                "weights": os.path.join(work, f"{model_tag(model)}_weights.npz"),
                "outputs": os.path.join(work, f"{tag}_outputs.npz")}
        print(f"  starting {tag} ...", flush=True)
        w = Worker(spec, worker_env(args.threads, onednn), os.path.join(log_dir, tag + ".log"), repeats)
        try:
            live.append((w, spec, onednn, w.ready()))
        except WorkerFailed as e:
            w.close()
            results.append(_result(spec, onednn, error=str(e)))
    rounds = max([w.repeats for w, *_ in live] or [0])
    for r in range(rounds):
        order = live if r % 2 == 0 else live[::-1]
        stepped = []
        for w, spec, onednn, ready in order:
            if w.remaining > 0 and w.proc.poll() is None:
                try:
                    stepped.append(f"{spec['framework']}{'' if onednn is None else ('+dnn' if onednn else '-dnn')} "
                                   f"{w.step():.0f} ms")
                except WorkerFailed as e:
                    ready["error"] = str(e)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(stepped), flush=True)
    for w, spec, onednn, ready in live:
        error = ready.pop("error", None)
        try:
            done = w.finish() if w.proc.poll() is None else {}
        except WorkerFailed as e:
            done, error = {}, error or str(e)
        results.append(_result(spec, onednn, w, ready, done, error))
    return results


def query_agreement(t, j, tol=1e-3):
    """Eval outputs compared query by query, whatever their order: the encoder's top-k picks
    the queries, and with freshly initialised weights many scores are near-ties, so a query
    can move or be swapped for another between frameworks (the parity harness forces the
    selection; here it is measured as is). For each PyTorch query, the nearest Jittor query
    (max |diff| over logits and boxes): how many lie within ``tol`` and the largest such distance."""
    a = np.concatenate([t["pred_logits"], t["pred_boxes"]], -1).reshape(-1, t["pred_logits"].shape[-1] + 4)
    b = np.concatenate([j["pred_logits"], j["pred_boxes"]], -1).reshape(a.shape)
    nearest = np.array([np.abs(b - row).max(-1).min() for row in a])
    close = nearest[nearest <= tol]
    return {f"queries matched within {tol:g}": f"{close.size}/{nearest.size}",
            "max |diff| of matched queries": float(close.max()) if close.size else float("nan")}


def agreement(results, work):
    """What the frameworks computed on the same inputs and weights (not a test; a sanity figure)."""
    out = []
    for r in results:
        if r["framework"] != "jittor" or r["error"]:
            continue
        tag = f"{model_tag(r['model'])}_{r['phase']}"
        jpath = os.path.join(work, f"{tag}_jittor_{'onednn' if r['onednn'] else 'noonednn'}_outputs.npz")
        tpath = os.path.join(work, f"{tag}_pytorch_outputs.npz")
        if not (os.path.exists(jpath) and os.path.exists(tpath)):
            continue
        with np.load(jpath) as j, np.load(tpath) as t:
            if r["phase"] != "train":
                figs = {f"max |diff| {k}": float(np.abs(j[k] - t[k]).max()) for k in ("pred_logits", "pred_boxes")}
                figs.update(query_agreement(t, j))
            else:
                figs = {"torch first-step loss": float(t["loss"]), "jittor first-step loss": float(j["loss"])}
        out.append({"model": r["model"], "phase": r["phase"], "onednn": r["onednn"], "figures": figs})
    return out


def _ratios(results):
    out = []
    for r in results:
        if r["framework"] != "jittor":
            continue
        t = next((x for x in results if x["framework"] == "pytorch" and (x["model"], x["phase"]) == (r["model"], r["phase"])), None)
        tm = t["median_ms"] if t else None
        tc = t.get("cpu_median_ms") if t else None
        out.append({"model": r["model"], "phase": r["phase"], "onednn": r["onednn"], "torch_median_ms": tm,
                    "jittor_median_ms": r["median_ms"], "ratio": ratio(r["median_ms"], tm),
                    "torch_cpu_median_ms": tc, "jittor_cpu_median_ms": r.get("cpu_median_ms"),
                    "cpu_ratio": ratio(r.get("cpu_median_ms"), tc)})
    return out


def measure_cold(args, model, log_dir):
    """Jittor from an empty cache: import (core compile), then the first eval, then (same cache,
    eval ops now compiled) the first training step. Returns a dict for ``report``."""
    print(f"cold compile: fresh Jittor cache for {model} (several minutes) ...", flush=True)
    with FreshJittorHome(worker_env(args.threads, True)) as home:
        if not home.onednn:
            return {"model": model, "onednn": False, "error": f"oneDNN layout failed: {home.setup_log}"}
        out = {"model": model, "onednn": True, "home_setup": home.setup_log}
        for phase in ("eval", "train"):
            spec = {"framework": "jittor", "model": model, "size": args.size, "phase": phase, "warmup": 0,
                    "batch": args.eval_batch if phase == "eval" else args.train_batch, "threads": args.threads}
            w = Worker(spec, home.env, os.path.join(log_dir, f"cold_{model_tag(model)}_{phase}.log"), 0)
            try:
                ready = w.ready()
                w.finish()
            except WorkerFailed as e:
                w.close()
                out["error"] = str(e)
                return out
            if phase == "eval":
                out.update(import_s=ready["import_s"], build_s=ready["build_s"], first_eval_ms=ready["first_ms"])
            else:
                out.update(train_import_s=ready["import_s"], first_train_ms=ready["first_ms"])
            print(f"  cold {phase}: import {ready['import_s']:.1f} s, first iteration {ready['first_ms'] / 1000:.1f} s", flush=True)
        return out


def latest_profiles(out, models):
    """Top Jittor hot spots from the ``bench.profile_jittor`` files already under ``out``
    (they are not re-measured here: ``python -m bench.profile_jittor`` writes them)."""
    import json
    from bench.profile_common import hot_spots
    found = []
    for model in models:
        for phase in ("eval", "train"):
            path = os.path.join(out, f"profile_jittor_{model_tag(model)}_{phase}.json")
            if os.path.exists(path):
                with open(path) as f:
                    prof = json.load(f)
                found.append({"model": model_tag(model), "phase": phase, "wall_ms": prof["wall_ms"],
                              "written": time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path))),
                              "hot_spots": [{"name": n, "ms": ms, "share": sh} for n, ms, sh in hot_spots(prof)]})
    return found


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    busy_start = cpu_busy_s()
    meta = {"size": args.size, "eval_batch": args.eval_batch, "train_batch": args.train_batch, "threads": args.threads,
            "repeats": args.repeats, "warmup": args.warmup, "train_repeats": args.train_repeats,
            "train_warmup": args.train_warmup, "models": _split(args.models), "phases": _split(args.phases),
            "frameworks": _split(args.frameworks), "nomkl_models": _split(args.nomkl_models),
            "nomkl_phases": _split(args.nomkl_phases), "nomkl_repeats": args.nomkl_repeats, "cold": args.cold,
            "quick": args.quick, "note": args.note, "machine": machine_info(), "loadavg_start": loadavg(),
            "env": {k: worker_env(args.threads).get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")},
            "command": " ".join([os.path.basename(sys.executable), "-m", "bench.run"] + list(argv if argv is not None else sys.argv[1:]))}
    log_dir = os.path.join(args.out, "logs")
    work = tempfile.mkdtemp(prefix="rtdetr_bench_")
    results = []
    try:
        for model in _split(args.models):
            for phase in _split(args.phases):
                print(f"{model} {phase} (size {args.size}) ...", flush=True)
                results += run_group(args, model, phase, work, log_dir)
        agree = agreement(results, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cold = measure_cold(args, _split(args.models)[0], log_dir) if args.cold else None
    meta.update(loadavg_end=loadavg(), wall_s=time.time() - t_start)
    meta["other_load_cores"] = other_load(busy_start, cpu_busy_s(), meta["wall_s"])
    if meta["other_load_cores"] is not None and meta["other_load_cores"] >= 0.25:
        shared = (f"machine shared: other processes kept {meta['other_load_cores']:.2f} of "
                  f"{meta['machine']['cpus']} cores busy on average during this run")
        meta["note"] = f"{meta['note']}; {shared}" if meta["note"] else shared
    data = {"meta": meta, "results": results, "ratios": _ratios(results), "agreement": agree, "cold": cold,
            "profiles": latest_profiles(args.out, _split(args.models))}
    json_path, md_path = report.write(args.out, data)
    print(report.table(data))
    print(f"wrote {json_path} and {md_path}")
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
