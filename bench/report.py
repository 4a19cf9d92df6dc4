"""``bench.json`` and ``bench.md``: the measured figures and the Jittor/PyTorch ratios.

JSON layout (documented keys, checked by ``tests/test_bench.py``):

- ``meta``: machine, versions, threads, load average before/after, ``other_load_cores`` (other
  processes' average CPU use during the run), options, wall time, note.
- ``results``: one entry per measured configuration: ``model, phase, framework,
  onednn, batch, size, times_ms, cpu_times_ms, cpu_median_ms, warmup_ms, first_ms, import_s,
  build_s, peak_rss_mb, info, error`` plus the ``bench.stats.summarize`` keys (``median_ms, iqr_ms`` ...).
- ``ratios``: per model/phase/oneDNN setting, ``ratio`` = ``jittor_median_ms / torch_median_ms``
  and ``cpu_ratio`` = the same for the median process CPU time per run.
- ``agreement``: what the two frameworks computed on the same inputs and weights
  (eval: max |difference| of logits and boxes; train: first-step loss of each).
- ``cold``: Jittor with an empty compile cache (``null`` when not measured).
- ``profiles``: top-5 Jittor hot spots of the op-level profiles found under the output
  folder (``bench.profile_jittor`` writes them; empty when none).
"""
import json
import os

REQUIRED_KEYS = ("meta", "results", "ratios", "agreement", "cold")
RESULT_KEYS = ("model", "phase", "framework", "onednn", "batch", "size", "times_ms", "cpu_median_ms", "median_ms",
               "iqr_ms", "min_ms", "max_ms", "first_ms", "peak_rss_mb", "error")
RATIO_KEYS = ("model", "phase", "onednn", "torch_median_ms", "jittor_median_ms", "ratio", "cpu_ratio")


def _ms(x):
    return "—" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def _cores(x):
    return "unknown" if x is None else f"{x:.2f} cores"


def _mb(x):
    return "—" if x is None else f"{x:.0f}"


def _find(results, model, phase, framework, onednn=None):
    for r in results:
        if (r["model"], r["phase"], r["framework"]) == (model, phase, framework) and \
                (onednn is None or r["onednn"] == onednn):
            return r
    return None


def _cell(r):
    if r is None:
        return "—"
    if r.get("error"):
        return "failed"
    if not r.get("n"):
        return "—"
    return f"{_ms(r['median_ms'])} ± {_ms(r['iqr_ms'])} (min {_ms(r['min_ms'])}, n={r['n']})"


def markdown(data):
    """The report as Markdown: the main table, then cold compile, agreement and notes."""
    meta, results = data["meta"], data["results"]
    lines = ["# RT-DETR benchmark: Jittor vs PyTorch", "",
             f"Input {meta['size']}x{meta['size']}, eval batch {meta['eval_batch']}, train batch "
             f"{meta['train_batch']}, threads {meta['threads']} (OMP_NUM_THREADS={meta['env'].get('OMP_NUM_THREADS')}),"
             f" {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}).",
             f"Load average before/after: {meta['loadavg_start']} / {meta['loadavg_end']}; other processes' "
             f"average CPU use during the run: {_cores(meta.get('other_load_cores'))}. "
             f"Wall time {meta['wall_s']:.0f} s.", ""]
    tinfo = next((r.get("info") or {} for r in results if r["framework"] == "pytorch" and r.get("info")), {})
    jinfo = next((r.get("info") or {} for r in results if r["framework"] == "jittor" and r.get("info")), {})
    lines += [f"PyTorch {tinfo.get('torch_version', '?')}: {tinfo.get('torch_threads', '?')} intra-op threads, "
              f"{tinfo.get('torch_interop_threads', '?')} inter-op. Jittor {jinfo.get('jittor_version', '?')}: "
              "oneDNN conv/matmul use OMP_NUM_THREADS threads; Jittor's own fused CPU kernels are "
              "single-threaded in this version.", ""]
    if meta.get("note"):
        lines += [f"Note: {meta['note']}", ""]
    lines += ["Times: median ± IQR (min, count) of warm runs in ms; ratio = Jittor median / PyTorch median; "
              "CPU ratio = the same for the process CPU time (all threads) of each run, which a shared machine "
              "disturbs less than wall time; first = first iteration of the process "
              "(warm compile cache); RSS = peak resident memory of that process.", "",
              "| model | phase | oneDNN | torch ms | jittor ms | ratio J/T | CPU ratio | torch first ms | jittor first ms "
              "| torch RSS MB | jittor RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rt in data["ratios"]:
        t = _find(results, rt["model"], rt["phase"], "pytorch")
        j = _find(results, rt["model"], rt["phase"], "jittor", rt["onednn"])
        ratio = "—" if rt["ratio"] is None else f"{rt['ratio']:.2f}"
        cpu_ratio = "—" if rt.get("cpu_ratio") is None else f"{rt['cpu_ratio']:.2f}"
        lines.append(f"| {rt['model']} | {rt['phase']} | {'on' if rt['onednn'] else 'off'} | {_cell(t)} | "
                     f"{_cell(j)} | {ratio} | {cpu_ratio} | {_ms(t and t.get('first_ms'))} | {_ms(j and j.get('first_ms'))} | "
                     f"{_mb(t and t.get('peak_rss_mb'))} | {_mb(j and j.get('peak_rss_mb'))} |")
    lines += ["", "## Jittor cold compile (empty cache)", ""]
    cold = data.get("cold")
    if not cold:
        lines.append("Not measured in this run (`python -m bench.run --cold`).")
    elif cold.get("error"):
        lines.append(f"Failed: {cold['error'].splitlines()[0]}")
    else:
        lines += [f"Model {cold['model']}, oneDNN {'on' if cold['onednn'] else 'off'}.", "",
                  "| step | seconds |", "|---|---|",
                  f"| import (core compile) | {cold['import_s']:.1f} |",
                  f"| first eval (op compile + run) | {cold['first_eval_ms'] / 1000:.1f} |",
                  f"| first training step (op compile + run, eval ops cached) | {cold['first_train_ms'] / 1000:.1f} |"]
    lines += ["", "## Agreement on the measured inputs", "",
              "A sanity figure, not the parity test: same weights (fresh initialisation) and inputs. "
              "Eval max |diff| compares outputs position by position; a query that the encoder's top-k "
              "ordered differently (near-tied scores) shows there as a large difference, so the queries are "
              "also matched to their nearest counterpart.", "",
              "| model | phase | oneDNN | figure | value |", "|---|---|---|---|---|"]
    for a in data["agreement"]:
        for k, v in a["figures"].items():
            val = v if isinstance(v, str) else f"{v:.3g}"
            lines.append(f"| {a['model']} | {a['phase']} | {'on' if a['onednn'] else 'off'} | {k} | {val} |")
    if data.get("profiles"):
        lines += ["", "## Jittor hot spots (latest `python -m bench.profile_jittor`)", "",
                  "Share of the summed kernel time of one profiled iteration (profiled separately, "
                  "each kernel timed synchronously; see `profile_<model>.md`).", "",
                  "| model | phase | profiled | hot spots |", "|---|---|---|---|"]
        for p in data["profiles"]:
            spots = "; ".join(f"{h['name']} {100 * h['share']:.0f}%" for h in p["hot_spots"])
            lines.append(f"| {p['model']} | {p['phase']} | {p['written']} | {spots} |")
    errors = [r for r in results if r.get("error")]
    if errors:
        lines += ["", "## Failures", ""]
        lines += [f"- {r['model']} {r['phase']} {r['framework']} oneDNN={r['onednn']}: "
                  f"{r['error'].splitlines()[0]}" for r in errors]
    return "\n".join(lines) + "\n"


def table(data):
    """A compact plain-text table for the console."""
    rows = [("model", "phase", "oneDNN", "torch ms", "jittor ms", "J/T", "CPU J/T", "torch MB", "jittor MB")]
    for rt in data["ratios"]:
        t = _find(data["results"], rt["model"], rt["phase"], "pytorch")
        j = _find(data["results"], rt["model"], rt["phase"], "jittor", rt["onednn"])
        rows.append((rt["model"], rt["phase"], "on" if rt["onednn"] else "off", _cell(t), _cell(j),
                     "—" if rt["ratio"] is None else f"{rt['ratio']:.2f}",
                     "—" if rt.get("cpu_ratio") is None else f"{rt['cpu_ratio']:.2f}",
                     _mb(t and t.get("peak_rss_mb")), _mb(j and j.get("peak_rss_mb"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def write(out_dir, data):
    """Write ``bench.json`` and ``bench.md`` under ``out_dir``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, "bench.json"), os.path.join(out_dir, "bench.md")
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
    with open(md_path, "w") as f:
        f.write(markdown(data))
    return json_path, md_path
