"""The index of parity reports: ``reports/parity/index.json`` and ``index.md`` list every
whole-model comparison of the last test session (test, verdict, worst tolerance ratio,
first divergence, not-judgeable count, link to its report), and the user-data runs of
``python -m parity compare --weights ... --images ...`` made since (``add_to_index``)."""
import json
import os
import re
from pathlib import Path

from rtdetr_common.files import write_text_atomic

from .report import build_report, write_report

PARITY_REPORTS = os.path.join("reports", "parity")


def report_dir_name(test_id, label=""):
    """A directory name for a pytest node id (and a label such as the dtype)."""
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", test_id.replace("::", "__")).strip("_")
    return (name[:150] + (f"__{label}" if label else ""))


def write_test_report(entries, test_id, results, label="", input_info=None, config=None, root=PARITY_REPORTS,
                      expected="PASS"):
    """Write one comparison's report under ``root/<test id>__<label>/`` and append its
    index row to ``entries`` (``expected``: the verdict the test asserts, FAIL for a
    planted bug); returns the report dict."""
    from .report import environment_info
    run = report_dir_name(test_id, label)
    report = build_report(results, run=run, config=config or {}, input_info=input_info or {},
                          environment=environment_info())
    write_report(report, root, with_plot=bool(results))
    summary, first = report["summary"], report["first_divergence"]
    entries.append({"test": test_id, "label": label, "verdict": summary["verdict"], "expected": expected,
                    "total": summary["total"], "failed": summary["failed"],
                    "not_judgeable": summary.get("not_judgeable", 0),
                    "worst_tol_ratio": worst_judged_ratio(report["tensors"]),
                    "first_divergence": first["name"] if first else None,
                    "link": f"{run}/report.md"})
    return report


def worst_judged_ratio(tensors):
    """The largest tol ratio among a report's judged tensors (a not-judgeable tensor's
    ratio decides nothing); None when none was judged."""
    ratios = [float(t["metrics"].get("tol_ratio") or 0.0) for t in tensors if t["verdict"] != "not judgeable"]
    return max(ratios) if ratios else None


def verdict_text(entry):
    """The verdict, with what the test expected when that is not a PASS or not met."""
    expected = entry.get("expected", "PASS")
    if entry["verdict"] != expected:
        return f"{entry['verdict']} (**unexpected**: the test expects {expected})"
    return entry["verdict"] if expected == "PASS" else f"{entry['verdict']} (expected {expected})"


def write_index(entries, root=PARITY_REPORTS):
    """Write ``index.json`` and ``index.md`` under ``root``; returns the markdown path."""
    Path(root).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(root) / "index.json", json.dumps(entries, indent=1))
    lines = ["# Parity reports", "", "The comparisons of the last test session, then any user-data runs made since. "
             "A planted bug's comparison is expected to FAIL (`expected FAIL`); any other verdict than the "
             "expected one is marked **unexpected**.", "",
             "| test | verdict | tensors | failed | not judgeable (float32) | worst tol ratio (judged) | first divergence | report |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        ratio = e["worst_tol_ratio"]
        ratio_text = ratio if isinstance(ratio, str) else ("-" if ratio is None else f"{ratio:.3g}")
        test = e["test"] + (f" [{e['label']}]" if e["label"] else "")
        lines.append(f"| `{test}` | {verdict_text(e)} | {e['total']} | {e['failed']} | {e['not_judgeable']} | "
                     f"{ratio_text} | {('`' + e['first_divergence'] + '`') if e['first_divergence'] else '-'} | "
                     f"[report]({e['link']}) |")
    path = Path(root) / "index.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def add_to_index(entry, root=PARITY_REPORTS):
    """Add ``entry`` to the index under ``root`` (replacing one with the same link) and
    rewrite it; returns the markdown path."""
    path = Path(root) / "index.json"
    entries = []
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except ValueError:
            entries = []  # a damaged index is rebuilt from this entry on
    entries = [e for e in entries if e.get("link") != entry["link"]] + [entry]
    return write_index(entries, root)
