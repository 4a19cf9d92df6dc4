"""Unit tests for parity.report and parity.plot: JSON round trip, the markdown
summary, latest_run and the error-by-layer PNG."""
import datetime
import json

import numpy as np
import pytest
from PIL import Image

from parity import plot, report
from parity.compare import compare_assignment, compare_exact, compare_float, compare_topk_selection

CREATED = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def results_with_failures():
    """Four tensors in execution order: pass, fail (ratio 4), tie, fail (ratio 2)."""
    ones = np.ones(4)
    return [
        compare_float("backbone.conv1", ones, ones, atol=0.125, rtol=0.0),
        compare_float("encoder.input_proj.0", ones, ones + 0.5, atol=0.125, rtol=0.0),
        compare_topk_selection([0, 1], [0, 2], [3.0, 2.0, 2.0]),
        compare_float("probe:decoder.layer1.boxes", ones, ones + 0.25, atol=0.125, rtol=0.0),
    ]


def build(results, **kwargs):
    kwargs.setdefault("environment", {"python": "3.x", "jittor_backend": {"onednn": True}})
    return report.build_report(results, run=kwargs.pop("run", "run1"), created=CREATED, **kwargs)


def test_report_json_round_trips_and_is_standard_json(tmp_path):
    results = results_with_failures()
    results.append(compare_float("nan.case", np.array([np.nan]), np.array([1.0]), 0.0, 0.0))
    built = build(results, config={"path": "configs/rtdetr/x.yml"}, input_info={"batch": 2})
    run_dir = report.write_report(built, tmp_path, with_plot=False)
    text = (run_dir / report.REPORT_JSON).read_text()

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads(text, parse_constant=reject) == built
    assert report.load_report(run_dir) == built
    assert built["tensors"][-1]["metrics"]["max_abs"] == "inf"


def test_report_fields_follow_execution_order_and_count_failures():
    built = build(results_with_failures())
    assert [entry["index"] for entry in built["tensors"]] == [0, 1, 2, 3]
    assert built["tensors"][3]["module"] == "decoder.layer1.boxes"
    assert built["summary"]["verdict"] == "FAIL"
    assert (built["summary"]["passed"], built["summary"]["failed"]) == (2, 2)
    assert built["summary"]["ties"] == ["probe:decoder.topk_ind"]
    worst = [row["name"] for row in built["summary"]["worst"]]
    assert worst[:2] == ["encoder.input_proj.0", "probe:decoder.layer1.boxes"]
    assert built["created"] == "2025-01-02T03:04:05+00:00"


def test_first_divergence_is_the_first_failure_in_execution_order():
    saved = {"encoder.input_proj.0": "reports/run1/inputs/encoder.input_proj.0.npz"}
    built = build(results_with_failures(), saved_inputs=saved)
    first = built["first_divergence"]
    assert first["name"] == "encoder.input_proj.0" and first["index"] == 1
    assert first["saved_inputs"] == saved["encoder.input_proj.0"]


def test_markdown_names_the_first_divergence_and_the_verdict():
    markdown = report.render_markdown(build(results_with_failures()))
    assert "**Verdict: FAIL** - 2 of 4 tensors" in markdown
    divergence = markdown.split("## First divergence")[1].split("##")[0]
    assert "`encoder.input_proj.0`" in divergence
    assert "probe:decoder.layer1.boxes" not in divergence
    assert "tie-aware:topk" in markdown
    assert "| jittor_backend.onednn | True |" in markdown


def test_markdown_for_an_all_pass_run():
    ones = np.ones(3)
    built = build([compare_float("a", ones, ones, 0.0, 0.0), compare_exact("b", [1], [1])])
    markdown = report.render_markdown(built)
    assert built["first_divergence"] is None
    assert "**Verdict: PASS**" in markdown and "None: every tensor is within tolerance" in markdown


def test_an_empty_run_is_not_a_pass():
    assert build([])["summary"]["verdict"] == "FAIL"


def test_markdown_rerenders_from_the_json_alone(tmp_path):
    run_dir = report.write_report(build(results_with_failures()), tmp_path)
    written = (run_dir / report.REPORT_MD).read_text()
    (run_dir / report.REPORT_MD).unlink()
    report.rerender(run_dir)
    assert (run_dir / report.REPORT_MD).read_text() == written
    assert "![error by layer](error_by_layer.png)" in written


def test_latest_run_uses_created_time_not_directory_name(tmp_path):
    older = build(results_with_failures(), run="b_older")
    newer = build(results_with_failures(), run="a_newer")
    newer["created"] = "2025-06-01T00:00:00+00:00"
    report.write_report(newer, tmp_path, with_plot=False)
    report.write_report(older, tmp_path, with_plot=False)
    assert report.latest_run(tmp_path).name == "a_newer"


def test_latest_run_of_an_empty_directory_is_none(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    assert report.latest_run(tmp_path) is None


@pytest.mark.parametrize("name, module", [
    ("decoder.dec_bbox_head.2", "decoder.dec_bbox_head.2"),
    ("probe:decoder.layer1.boxes", "decoder.layer1.boxes"),
    ("grad:backbone.conv1.conv1_1.conv.weight", "backbone.conv1.conv1_1.conv.weight"),
    ("step3:exp_avg:encoder.w", "encoder.w"),
])
def test_module_of_strips_name_prefixes(name, module):
    assert report.module_of(name) == module


def test_environment_records_caller_flags_and_threads():
    environment = report.environment_info({"onednn": True, "cuda": False}, {"torch": 2})
    assert environment["jittor_backend"] == {"onednn": True, "cuda": False}
    assert environment["threads"]["torch"] == 2
    assert environment["numpy"] == np.__version__


def count_pixels(image, colour):
    return sum(1 for pixel in image.getdata() if pixel == colour)


def test_plot_writes_a_png_with_failures_in_red(tmp_path):
    tensors = build(results_with_failures())["tensors"]
    path = plot.plot_errors(tensors, tmp_path / "errors.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (plot.WIDTH, plot.HEIGHT)
        assert count_pixels(image.convert("RGB"), plot.FAIL_COLOUR) > 0


def test_plot_of_a_passing_run_has_no_red(tmp_path):
    ones = np.ones(3)
    results = [compare_float("a", ones, ones + 2 ** -20, 1e-3, 0.0),
               compare_assignment([0], [0], [0], [0], np.ones((1, 1)))]
    path = plot.plot_errors(build(results)["tensors"], tmp_path / "errors.png")
    with Image.open(path) as image:
        assert count_pixels(image.convert("RGB"), plot.FAIL_COLOUR) == 0
