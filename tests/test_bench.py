"""Smoke tests of the benchmark plumbing (``bench/``): statistics, report rendering,
the Jittor profiler parsing, and one tiny end-to-end ``bench.run`` (small synthetic
config, 1 repeat, no warm-up) that must write ``bench.json`` and ``bench.md`` with the
documented keys. Nothing here looks at how fast anything was."""
import json
import os

import pytest

from bench import report
from bench.profile_jittor import categorize, marks_breakdown, parse_report, readable
from bench.stats import ratio, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC = os.path.join(ROOT, "configs", "synthetic", "rtdetr_r18vd_synthetic.yml")


def test_summarize_and_ratio():
    s = summarize([4.0, 1.0, 3.0, 2.0, None])
    assert s["n"] == 4 and s["median_ms"] == 2.5 and s["min_ms"] == 1.0 and s["max_ms"] == 4.0
    assert s["iqr_ms"] == pytest.approx(s["q3_ms"] - s["q1_ms"])
    assert summarize([])["median_ms"] is None
    assert ratio(3.0, 2.0) == 1.5 and ratio(None, 2.0) is None and ratio(1.0, 0) is None


def _fake_data():
    res = lambda fw, onednn, times: {  # noqa: E731
        "model": "r18vd", "phase": "eval", "framework": fw, "onednn": onednn, "batch": 1, "size": 64,
        "times_ms": times, **summarize(times), "first_ms": 9.0, "peak_rss_mb": 100.0, "error": None}
    results = [res("pytorch", None, [2.0, 2.0]), res("jittor", True, [1.0, 1.0]), res("jittor", False, [])]
    results[-1]["error"] = "RuntimeError: boom"
    ratios = [{"model": "r18vd", "phase": "eval", "onednn": o, "torch_median_ms": 2.0,
               "jittor_median_ms": m, "ratio": ratio(m, 2.0), "cpu_ratio": ratio(m, 4.0)}
              for o, m in ((True, 1.0), (False, None))]
    meta = {"size": 64, "eval_batch": 1, "train_batch": 2, "threads": 2, "env": {"OMP_NUM_THREADS": "2"},
            "machine": {"cpus": 2, "cpu_model": "x"}, "loadavg_start": [0, 0, 0], "loadavg_end": [0, 0, 0],
            "wall_s": 1.0, "note": "shared"}
    return {"meta": meta, "results": results, "ratios": ratios,
            "agreement": [{"model": "r18vd", "phase": "eval", "onednn": True, "figures": {"max |diff| x": 1e-6}}],
            "cold": None}


def test_report_renders_table_and_failures(tmp_path):
    data = _fake_data()
    md = report.markdown(data)
    assert "| r18vd | eval | on |" in md and "0.50 | 0.25 |" in md and "boom" in md and "Not measured" in md
    assert "CPU ratio" in md and "other processes" in md
    assert "r18vd" in report.table(data)
    json_path, md_path = report.write(str(tmp_path), data)
    assert json.load(open(json_path))["ratios"][0]["ratio"] == 0.5 and os.path.exists(md_path)


def test_query_agreement_ignores_query_order():
    import numpy as np
    from bench.run import query_agreement
    rng = np.random.default_rng(0)
    t = {"pred_logits": rng.random((1, 6, 3), dtype=np.float32), "pred_boxes": rng.random((1, 6, 4), dtype=np.float32)}
    j = {k: v[:, ::-1].copy() for k, v in t.items()}  # same queries, other order
    j["pred_boxes"][0, 0] += 0.5  # one query the frameworks disagree on
    figs = query_agreement(t, j)
    assert figs["queries matched within 0.001"] == "5/6" and figs["max |diff| of matched queries"] == 0.0


def test_other_load_is_machine_cpu_minus_ours():
    from bench.run import cpu_busy_s, other_load
    assert other_load((10.0, 1.0), (16.0, 3.0), 4.0) == 1.0  # 6 busy seconds, 2 of them ours, over 4 s
    assert other_load((10.0, 1.0), (11.0, 3.0), 4.0) == 0.0
    assert other_load((None, 1.0), (11.0, 3.0), 4.0) is None
    assert cpu_busy_s()[1] >= 0


def test_hot_spots_group_profile_rows():
    from bench.profile_common import hot_spots
    ops = [{"name": "mkl_conv", "shapes": "[1,3,8,8,]:1(100%)", "category": "conv (oneDNN)", "ms": 6.0},
           {"name": "broadcast_to+binary(multiply)+reduce(add)", "shapes": "[1,8,5,4,5,]:1(100%)",
            "category": "reductions", "ms": 3.0},
           {"name": "code", "shapes": "[1,100,8,32,]:1(100%)", "category": "custom", "ms": 1.0}]
    spots = hot_spots({"ops": ops, "total_op_ms": 10.0})
    assert [n for n, _, _ in spots] == ["oneDNN conv forward", "attention matmul as broadcast-multiply-reduce",
                                       "deformable attention kernel"]
    assert spots[0][2] == pytest.approx(0.6)


def test_jittor_profile_parsing():
    head = ["Name", "FileName", "Count", "TotalTime", "AvgTime", "MinTime", "MaxTime", "Input", "Output", "InOut", "Compute"]
    conv = "mkl_conv«Txd:float32«JIT:1"
    relay = "[marks:backbone,]«opkey0:broadcast_to«Tx:float32«opkey1:binary«Tx:float32«OP:multiply«opkey2:reduce«OP:add«relay"
    f64 = "[marks:encoder,]«opkey0:unary«Tx:float32«Ty:float64«OP:cast«opkey1:reduce«Tx:float64«OP:add"
    rep = [head, [conv, "f.cc shapes:\n[1,2,]:3(100%), ", "3", "3e6", "1e6"] + ["0"] * 6,
           [relay, "g.cc", "3", "0", "1e6"] + ["0"] * 6,
           [f64, "h.cc", "2", "1e6", "5e5"] + ["0"] * 6]
    rows, relayed = parse_report(rep)
    assert [r["category"] for r in rows] == ["conv (oneDNN)", "float64 statistics (norms, losses)"]
    assert rows[0]["ms"] == pytest.approx(3.0) and "[1,2,]" in rows[0]["shapes"]
    assert relayed[0]["marks"] == "backbone" and relayed[0]["ms"] == pytest.approx(3.0)
    assert marks_breakdown(rows, relayed, 1) == pytest.approx({"backbone": 3.0, "encoder": 1.0})
    assert readable(relay).startswith("broadcast_to+binary(multiply)+reduce(add)")
    assert categorize("«opkey0:reindex«opkey1:binary«OP:multiply«opkey2:reduce«OP:add").startswith("reindex+reduce")
    from rtdetr_jittor.compat.kernels import conv
    forward, backward = ("[marks:backbone,]code«IN_SIZE:2«" + src for src in (conv._FORWARD, conv._BACKWARD))
    assert [categorize(k) for k in (forward, backward)] == ["conv (oneDNN)", "conv backward (oneDNN)"]
    assert [readable(k) for k in (forward, backward)] == ["kernels.conv2d", "kernels.conv2d backward"]
    assert categorize("code«IN_SIZE:1«" + "for (i...) y[i] = x[i];").startswith("custom code")


def test_bench_run_writes_documented_files(tmp_path):
    from bench import run
    out = tmp_path / "bench"
    config_dir_before = sorted(os.listdir(os.path.dirname(SYNTHETIC)))
    run.main(["--models", SYNTHETIC, "--size", "96", "--quick", "--repeats", "1", "--train-repeats", "1",
              "--warmup", "0", "--train-warmup", "0", "--threads", "1", "--out", str(out), "--note", "test"])
    assert sorted(os.listdir(os.path.dirname(SYNTHETIC))) == config_dir_before  # writes only under --out
    assert (out / "logs").is_dir()
    data = json.load(open(out / "bench.json"))
    assert all(k in data for k in report.REQUIRED_KEYS)
    assert {(r["phase"], r["framework"]) for r in data["results"]} == {
        (phase, fw) for phase in ("eval", "deploy", "train") for fw in ("pytorch", "jittor")}
    assert {a["phase"] for a in data["agreement"]} == {"eval", "deploy", "train"}  # both outputs found
    for r in data["results"]:
        assert all(k in r for k in report.RESULT_KEYS)
        assert r["error"] is None, r["error"]
        assert len(r["times_ms"]) == 1 and r["peak_rss_mb"] > 0 and len(r["cpu_times_ms"]) == 1
    for rt in data["ratios"]:
        assert all(k in rt for k in report.RATIO_KEYS)
    assert data["meta"]["threads"] == 1 and data["cold"] is None
    md = (out / "bench.md").read_text()
    assert "| model | phase | oneDNN |" in md and "ratio J/T" in md
