"""Parity run reports: ``reports/<run>/report.json`` and a one-minute ``report.md``.

``build_report`` turns an execution-ordered list of :class:`parity.compare.Result`
into a JSON-ready dict (schema: ``parity/schema.md``); ``write_report`` writes the
run directory; ``render_markdown`` rebuilds the human summary from the JSON alone,
so a past run can be re-rendered; ``latest_run`` finds the newest run.
"""
import datetime
import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path

import numpy as np

from parity.compare import json_safe
from rtdetr_common.files import write_text_atomic

SCHEMA_VERSION = 1
WORST_COUNT = 15
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_PNG = "error_by_layer.png"
CALLER_RULE = "(set by caller)"
_NAME_PREFIXES = ("probe:", "loss:", "grad:")


def _package_version(name):
    """Installed version of ``name`` without importing it (None when absent)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info(jittor_backend=None, threads=None):
    """Versions, platform and thread settings of this process.

    ``jittor_backend``: the Jittor backend flags (oneDNN, CUDA...) as a dict, e.g.
    from ``rtdetr_jittor._env.backend_info()``; ``threads``: thread counts the caller
    knows (``torch.get_num_threads()``...). Neither framework is imported here.
    """
    thread_info = {"cpu_count": os.cpu_count(),
                   "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    thread_info.update(threads or {})
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": _package_version("torch"),
        "jittor": _package_version("jittor"),
        "jittor_backend": dict(jittor_backend or {}),
        "threads": thread_info,
    }


def module_of(name):
    """The module path inside a qualified tensor name (prefixes stripped).

    ``probe:decoder.layer1.boxes`` -> ``decoder.layer1.boxes``;
    ``step3:param:backbone.conv1.weight`` -> ``backbone.conv1.weight``.
    """
    for prefix in _NAME_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    if name.startswith("step") and name.count(":") >= 2:
        return name.split(":", 2)[2]
    return name


def _ratio_of(entry):
    value = entry["metrics"].get("tol_ratio", 0.0)
    return float(value) if value is not None else 0.0


def _is_tie(entry):
    metrics = entry["metrics"]
    return bool(metrics.get("tie")) or bool(metrics.get("tied_swaps"))


def _worst_entries(tensors, count):
    """Up to ``count`` tensors with the largest tol_ratio; failures first on equal ratio."""
    ranked = sorted(enumerate(tensors),
                    key=lambda item: (-_ratio_of(item[1]), item[1]["passed"], item[0]))
    return [entry for _, entry in ranked[:count]]


def _rules_used(tensors):
    """One row per tolerance rule that judged something, in first-use order."""
    rules = {}
    for entry in tensors:
        pattern = entry["rule"] or CALLER_RULE
        row = rules.setdefault(pattern, {
            "pattern": pattern, "tolerance": entry["tolerance"],
            "reason": entry["reason"], "tensors": 0, "failed": 0})
        row["tensors"] += 1
        row["failed"] += entry["verdict"] == "fail"
    return list(rules.values())


def _summary_row(entry):
    return {"index": entry["index"], "name": entry["name"], "kind": entry["kind"],
            "tol_ratio": entry["metrics"].get("tol_ratio"),
            "max_abs": entry["metrics"].get("max_abs"), "passed": entry["passed"],
            "verdict": entry["verdict"]}


def build_report(results, *, run=None, config=None, input_info=None, environment=None,
                 modules=None, saved_inputs=None, created=None):
    """A JSON-ready report dict for ``results`` (in execution order).

    ``config``: ``{"path": ..., **key settings}``; ``input_info``: mode, size, batch,
    seed, gt counts...; ``environment``: from :func:`environment_info` (built here
    when None); ``modules``: name -> module path where :func:`module_of` guesses
    wrong; ``saved_inputs``: tensor or module name -> path of the inputs/weights
    saved for re-running that module, quoted in ``first_divergence``.
    """
    created = created or datetime.datetime.now(datetime.timezone.utc)
    modules = modules or {}
    saved_inputs = saved_inputs or {}
    tensors = []
    for index, result in enumerate(results):
        entry = result.to_dict()
        entry["index"] = index
        entry["module"] = modules.get(result.name, module_of(result.name))
        tensors.append(entry)

    failed = [entry for entry in tensors if entry["verdict"] == "fail"]
    unjudged = [entry["name"] for entry in tensors if entry["verdict"] == "not judgeable"]
    first_divergence = None
    if failed:
        first = failed[0]
        first_divergence = {
            "index": first["index"], "name": first["name"], "module": first["module"],
            "kind": first["kind"], "metrics": first["metrics"], "rule": first["rule"],
            "reason": first["reason"], "tolerance": first["tolerance"], "note": first["note"],
            "saved_inputs": saved_inputs.get(first["name"], saved_inputs.get(first["module"])),
        }
    summary = {
        "verdict": "FAIL" if failed or not tensors else "PASS",
        "total": len(tensors),
        "passed": len(tensors) - len(failed) - len(unjudged),
        "failed": len(failed),
        "not_judgeable": len(unjudged),
        "not_judgeable_names": unjudged,
        "ties": [entry["name"] for entry in tensors if _is_tie(entry)],
        "worst": [_summary_row(entry) for entry in _worst_entries(tensors, WORST_COUNT)],
    }
    return json_safe({
        "schema_version": SCHEMA_VERSION,
        "run": run or created.strftime("%Y%m%dT%H%M%SZ"),
        "created": created.isoformat(timespec="seconds"),
        "environment": environment if environment is not None else environment_info(),
        "config": config or {},
        "input": input_info or {},
        "tensors": tensors,
        "rules": _rules_used(tensors),
        "summary": summary,
        "first_divergence": first_divergence,
    })


def write_report(report, reports_dir="reports", with_plot=True):
    """Write ``<reports_dir>/<run>/report.json``, ``report.md`` and the error plot.

    Returns the run directory.
    """
    run_dir = Path(reports_dir) / report["run"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False))
    if with_plot:
        from parity.plot import plot_errors
        partial = run_dir / f".{PLOT_PNG}.partial.png"
        plot_errors(report["tensors"], partial, title=f"parity run {report['run']}")
        os.replace(partial, run_dir / PLOT_PNG)
    write_text_atomic(run_dir / REPORT_MD, render_markdown(report, plot_file=PLOT_PNG if with_plot else None))
    return run_dir


def load_report(path):
    """The report dict from a run directory or a report.json path."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    with open(path) as handle:
        return json.load(handle)


def _created_time(run_dir):
    try:
        created = load_report(run_dir)["created"]
        return datetime.datetime.fromisoformat(created).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_run(reports_dir="reports"):
    """The run directory whose report.json has the newest ``created`` time, or None.

    Runs with an unreadable ``created`` rank by the file's modification time.
    """
    candidates = []
    for report_file in Path(reports_dir).glob(f"*/{REPORT_JSON}"):
        run_dir = report_file.parent
        created = _created_time(run_dir)
        stamp = created if created is not None else report_file.stat().st_mtime
        candidates.append((stamp, run_dir.name, run_dir))
    return max(candidates)[2] if candidates else None


def _number(value):
    """A metric for a table: 3 significant digits, '-' when absent."""
    if value is None:
        return "-"
    if isinstance(value, bool) or (isinstance(value, str) and value not in ("nan", "inf", "-inf")):
        return str(value)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return str(number)
    return f"{number:.3g}"


def _tolerance_words(tolerance):
    if not tolerance:
        return "-"
    if tolerance.get("exact"):
        return "exact"
    return ", ".join(f"{key} {_number(value)}" for key, value in tolerance.items())


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict_line(summary):
    ties = len(summary["ties"])
    tie_text = f"; {ties} discrete decision(s) passed as ties" if ties else ""
    unjudged = summary.get("not_judgeable", 0)
    unjudged_text = (f"; {unjudged} not judgeable in float32 (the reference's own floor swamps "
                     f"their scale: the float64 verdict decides)") if unjudged else ""
    if summary["verdict"] == "PASS":
        judged = summary["total"] - unjudged
        return (f"**Verdict: PASS** - all {judged} judgeable tensors within tolerance"
                f"{tie_text}{unjudged_text}.")
    if summary["total"] == 0:
        return "**Verdict: FAIL** - no tensor was compared."
    return (f"**Verdict: FAIL** - {summary['failed']} of {summary['total']} tensors "
            f"outside tolerance{tie_text}{unjudged_text}.")


def _divergence_lines(first):
    if first is None:
        return ["None: every tensor is within tolerance."]
    metrics = first["metrics"]
    lines = [f"`{first['name']}` (module `{first['module']}`, #{first['index']} in "
             f"execution order, {first['kind']} comparison).",
             "",
             f"- max_abs {_number(metrics.get('max_abs'))}, tolerance ratio "
             f"{_number(metrics.get('tol_ratio'))} under rule `{first['rule']}` "
             f"({_tolerance_words(first['tolerance'])}): {first['reason']}"]
    if first.get("note"):
        lines.append(f"- {first['note']}")
    if first.get("saved_inputs"):
        lines.append(f"- saved module inputs/weights: `{first['saved_inputs']}`")
    return lines


def _worst_table(report):
    by_name = {entry["name"]: entry for entry in report["tensors"]}
    lines = ["| # | tensor | kind | max_abs | tol ratio | verdict | rule |",
             "|---|---|---|---|---|---|---|"]
    for row in report["summary"]["worst"]:
        entry = by_name.get(row["name"], {})
        lines.append(f"| {row['index']} | `{_cell(row['name'])}` | {row['kind']} | "
                     f"{_number(row['max_abs'])} | {_number(row['tol_ratio'])} | "
                     f"{_verdict_words(row)} | `{_cell(entry.get('rule', ''))}` |")
    return lines


def _verdict_words(row):
    verdict = row.get("verdict", "pass" if row["passed"] else "fail")
    return {"pass": "pass", "fail": "**FAIL**"}.get(verdict, verdict)


def _ties_lines(report):
    ties = [entry for entry in report["tensors"] if entry["name"] in set(report["summary"]["ties"])]
    return [f"- `{entry['name']}`: {entry['note']}" for entry in ties]


def _rules_table(report):
    lines = ["| rule | tolerance | tensors | failed | reason |", "|---|---|---|---|---|"]
    for rule in report["rules"]:
        lines.append(f"| `{_cell(rule['pattern'])}` | {_tolerance_words(rule['tolerance'])} | "
                     f"{rule['tensors']} | {rule['failed']} | {_cell(rule['reason'])} |")
    return lines


def _flat_items(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict) and not value:
            yield f"{prefix}{key}", "(not given)"
        elif isinstance(value, dict):
            yield from _flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _key_value_table(mapping):
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in _flat_items(mapping)]
    return lines


def render_markdown(report, plot_file=None):
    """The one-minute human summary of a report dict (needs nothing but the JSON)."""
    summary = report["summary"]
    lines = [f"# Parity report `{report['run']}`", "", _verdict_line(summary), "",
             f"Created {report['created']}; config `{report['config'].get('path', '-')}`; "
             f"input: " + (", ".join(f"{k} {v}" for k, v in report["input"].items()) or "-"),
             "", "## First divergence", ""]
    lines += _divergence_lines(report["first_divergence"])
    lines += ["", f"## Worst {len(summary['worst'])} tensors by error / tolerance", "",
              "tol ratio = worst element's error divided by what its rule allows; "
              "above 1 fails.", ""]
    lines += _worst_table(report)
    if summary["ties"]:
        lines += ["", "## Ties (passed)", ""] + _ties_lines(report)
    if plot_file:
        lines += ["", "## Error by layer", "", f"![error by layer]({plot_file})"]
    lines += ["", "## Tolerance rules used", ""] + _rules_table(report)
    lines += ["", "## Environment", ""] + _key_value_table(report["environment"])
    return "\n".join(lines) + "\n"


def rerender(run_dir):
    """Rewrite ``report.md`` of an existing run from its report.json; returns its path."""
    run_dir = Path(run_dir)
    plot_file = PLOT_PNG if (run_dir / PLOT_PNG).exists() else None
    markdown_path = run_dir / REPORT_MD
    markdown_path.write_text(render_markdown(load_report(run_dir), plot_file=plot_file))
    return markdown_path

