"""Weight conversion (``rtdetr_jittor.convert``): PyTorch <-> Jittor, strict checks, --verify.

The r18vd state used here comes from the reference model (its fresh weights, or
``parity.weights.realistic_random_state`` for --verify, where fresh weights are
degenerate); ``num_batches_tracked`` counters get distinct non-zero values so the
int64 0-d (torch) <-> shape-[1] (Jittor) conversion is exercised. Expected key names
for the wrong-architecture case come from the official key lists in ``fixtures/official``.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from rtdetr_jittor._env import jt
from rtdetr_jittor import convert
from rtdetr_common.checkpoint_io import CheckpointError
import reference_pytorch
from reference_pytorch.checkpoint import read_weights as read_torch_weights
from reference_pytorch.checkpoint import save_training_checkpoint
from parity.weights import realistic_random_state, torch_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG18 = os.path.join(ROOT, "configs", "rtdetr", "rtdetr_r18vd_6x_coco.yml")
CFG50 = os.path.join(ROOT, "configs", "rtdetr", "rtdetr_r50vd_6x_coco.yml")
NO_PRETRAINED = {"PResNet": {"pretrained": False}}


def _official_keys(name):
    with open(os.path.join(ROOT, "fixtures", "official", f"rtdetr_{name}_state_dict.tsv")) as f:
        return [line.split("\t")[0] for line in f if line.strip()]


def _with_counters(state):
    """Give every ``num_batches_tracked`` a distinct non-zero count."""
    out = dict(state)
    for i, k in enumerate(k for k in state if k.endswith("num_batches_tracked")):
        out[k] = torch.tensor(1000 + 7 * i, dtype=torch.int64)
    return out


@pytest.fixture(scope="module")
def ref18():
    return reference_pytorch.build(CFG18, NO_PRETRAINED).model


@pytest.fixture(scope="module")
def fresh_state(ref18):
    """The reference's fresh r18vd state_dict (tensors), counters set."""
    return _with_counters({k: v.detach().clone() for k, v in ref18.state_dict().items()})


@pytest.fixture(scope="module")
def realistic_state(ref18):
    """Trained-like random r18vd weights (tensors), counters set."""
    state = realistic_random_state(torch_shapes(ref18), seed=3)
    return _with_counters({k: torch.from_numpy(v) for k, v in state.items()})


def _assert_same_state(got, want):
    """Same keys in the same order, same dtypes, shapes and bits."""
    assert list(got) == list(want)
    for k in want:
        g, w = got[k], want[k]
        assert g.dtype == w.dtype and tuple(g.shape) == tuple(w.shape), k
        assert torch.equal(g, w), k


def _jittor_file(path):
    return jt.load(str(path))["model"]


def test_round_trip_torch_jittor_torch_is_bit_identical(tmp_path, fresh_state, ref18, capsys):
    src, mid, back = tmp_path / "src.pth", tmp_path / "mid.pkl", tmp_path / "back.pth"
    torch.save({"model": fresh_state}, src)
    assert convert.main([str(src), str(mid), "-c", CFG18]) == 0
    jittor_state = _jittor_file(mid)
    counter = "backbone.conv1.conv1_1.norm.num_batches_tracked"
    assert jittor_state[counter].shape == (1,) and jittor_state[counter][0] == fresh_state[counter].item()
    assert convert.main([str(mid), str(back), "--to", "torch", "-c", CFG18]) == 0
    restored = torch.load(back, map_location="cpu", weights_only=True)["model"]
    _assert_same_state(restored, fresh_state)
    assert restored[counter].dim() == 0 and restored[counter].dtype == torch.int64
    model = reference_pytorch.build(CFG18, NO_PRETRAINED).model
    model.load_state_dict(restored, strict=True)  # torch's own strict load
    assert "checked against" in capsys.readouterr().out


def test_wrong_architecture_names_keys_fails_and_writes_nothing(tmp_path, fresh_state, capsys):
    src, dst = tmp_path / "r18.pth", tmp_path / "r50.pkl"
    torch.save({"model": fresh_state}, src)
    code = convert.main([str(src), str(dst), "-c", CFG50])
    err = capsys.readouterr().err
    assert code == convert.EXIT_BAD_INPUT != 0
    r18 = set(_official_keys("r18vd"))
    first_missing = next(k for k in _official_keys("r50vd") if k not in r18)  # r50's first key r18 lacks
    assert first_missing in err and "missing" in err and "mis-shaped" in err
    assert not dst.exists()


def test_torch_target_checks_against_the_reference_model(tmp_path, fresh_state, capsys):
    src, dst = tmp_path / "r18.pth", tmp_path / "r50.pth"
    torch.save(fresh_state, src)
    assert convert.main([str(src), str(dst), "--to", "torch", "-c", CFG50]) == convert.EXIT_BAD_INPUT
    assert "backbone.res_layers.0.blocks.0.branch2c" in capsys.readouterr().err
    assert not dst.exists()


@pytest.mark.parametrize("kind", ["torch", "jittor"])
def test_truncated_source_fails_clearly(tmp_path, fresh_state, kind, capsys):
    whole, cut, dst = tmp_path / "whole", tmp_path / "cut", tmp_path / "out.pkl"
    if kind == "torch":
        torch.save({"model": fresh_state}, whole)
    else:
        jt.save({"model": {k: v.numpy() for k, v in fresh_state.items()}}, str(whole))
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert convert.main([str(cut), str(dst)]) == convert.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and str(cut) in err
    assert not dst.exists()


def test_command_line_exit_status_and_message(tmp_path):
    """The module as a program: a cut file gives a one-line error, not a traceback."""
    cut = tmp_path / "cut.pth"
    cut.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    proc = subprocess.run([sys.executable, "-m", "rtdetr_jittor.convert", str(cut), str(tmp_path / "o.pkl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 2
    assert "error: cannot convert" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("layout", ["ema.module", "model", "bare"])
def test_official_layouts_load(tmp_path, fresh_state, layout):
    obj = {"ema.module": {"ema": {"module": fresh_state, "updates": 10}},
           "model": {"model": fresh_state, "last_epoch": 3}, "bare": fresh_state}[layout]
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pkl"
    torch.save(obj, src)
    assert convert.main([str(src), str(dst), "-c", CFG18]) == 0
    got = _jittor_file(dst)
    assert list(got) == list(fresh_state)
    for k, v in fresh_state.items():
        np.testing.assert_array_equal(got[k].reshape(v.shape), v.numpy())


def test_ema_module_is_preferred_over_model(tmp_path, fresh_state, realistic_state):
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pkl"
    torch.save({"model": fresh_state, "ema": {"module": realistic_state}}, src)
    assert convert.main([str(src), str(dst)]) == 0
    key = "decoder.enc_output.0.weight"
    np.testing.assert_array_equal(_jittor_file(dst)[key], realistic_state[key].numpy())


def test_project_checkpoint_converts_to_torch(tmp_path, ref18):
    src, dst = tmp_path / "train.ckpt", tmp_path / "w.pth"
    save_training_checkpoint(str(src), ref18, epoch=1, step=5)
    assert convert.main([str(src), str(dst), "--to", "torch", "-c", CFG18]) == 0
    restored = torch.load(dst, map_location="cpu", weights_only=True)["model"]
    _assert_same_state(restored, ref18.state_dict())


def test_reference_reads_a_jittor_file_strictly(tmp_path, fresh_state):
    src, dst = tmp_path / "src.pth", tmp_path / "w.pkl"
    torch.save(fresh_state, src)
    assert convert.main([str(src), str(dst)]) == 0
    model = reference_pytorch.build(CFG18, NO_PRETRAINED).model
    from reference_pytorch.checkpoint import load_model_state
    load_model_state(model, read_torch_weights(str(dst)), strict=True)
    _assert_same_state(model.state_dict(), fresh_state)


def test_jittor_target_refuses_a_torch_file_name(tmp_path, fresh_state, capsys):
    src = tmp_path / "src.pth"
    torch.save(fresh_state, src)
    assert convert.main([str(src), str(tmp_path / "out.pth")]) == convert.EXIT_BAD_INPUT
    assert ".pkl" in capsys.readouterr().err


def test_counter_conventions():
    state = {"a.num_batches_tracked": np.array(5, np.int64), "a.weight": np.ones((2, 3), np.float32)}
    j = convert.jittor_conventions(state)
    t = convert.torch_conventions(j)
    assert j["a.num_batches_tracked"].shape == (1,) and j["a.num_batches_tracked"].dtype == np.int64
    assert t["a.num_batches_tracked"].shape == () and int(t["a.num_batches_tracked"]) == 5
    assert t["a.weight"].shape == (2, 3)


def _printed_diffs(out):
    return {k: float(v) for k, v in re.findall(r"([\w.]+): max \|torch - jittor\| = (\S+)", out)}


@pytest.mark.parametrize("to", ["jittor", "torch"])
def test_verify_passes_for_converted_realistic_weights(tmp_path, realistic_state, to, capsys):
    torch_file, jittor_file = tmp_path / "w.pth", tmp_path / "w.pkl"
    if to == "jittor":
        torch.save({"ema": {"module": realistic_state}}, torch_file)
        src, dst = torch_file, jittor_file
    else:
        jt.save({"model": {k: v.numpy() for k, v in realistic_state.items()}}, str(jittor_file))
        src, dst = jittor_file, torch_file
    code = convert.main([str(src), str(dst), "--to", to, "-c", CFG18, "--verify", "--size", "64"])
    out = capsys.readouterr().out
    diffs = _printed_diffs(out)
    assert set(diffs) == {"pred_logits", "pred_boxes", "decoder.enc_outputs_class"}
    assert code == 0 and max(diffs.values()) <= convert.DEFAULT_THRESHOLD, out
    assert "verify passed" in out


@pytest.mark.parametrize("key,shows_in", [
    ("decoder.dec_score_head.2.bias", "pred_logits"),  # class head of the last (eval) decoder layer
    ("decoder.enc_score_head.bias", "decoder.enc_outputs_class"),  # only ranks queries in eval
])
def test_verify_detects_a_wrongly_converted_tensor(realistic_state, key, shows_in):
    torch_state = {k: v.numpy() for k, v in realistic_state.items()}
    wrong = dict(torch_state)
    wrong[key] = torch_state[key] + np.float32(0.5)
    diffs, _ = convert.compare_outputs(CFG18, torch_state, wrong, size=64)
    assert diffs[shows_in] > 0.4  # every score moved by 0.5
    assert diffs["pred_boxes"] <= convert.DEFAULT_THRESHOLD  # neither bias is on the box path


def test_verify_imposes_the_reference_query_ranking(realistic_state):
    """A zero encoder score head ties every anchor's score exactly, and the frameworks
    order tied top-k entries differently: left alone, the output rows come out permuted
    (measured 1.1); with the reference's ranking imposed only rounding is left."""
    state = {k: v.numpy().copy() for k, v in realistic_state.items()}
    state["decoder.enc_score_head.weight"][:] = 0
    own, changed = convert.compare_outputs(CFG18, state, state, size=64, seed=1, impose_selection=False)
    assert changed > 0 and own["pred_logits"] > 0.1
    imposed, _ = convert.compare_outputs(CFG18, state, state, size=64, seed=1)
    assert max(imposed.values()) <= convert.DEFAULT_THRESHOLD


def test_verify_failure_exit_status(tmp_path, fresh_state, monkeypatch, capsys):
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pkl"
    torch.save(fresh_state, src)
    monkeypatch.setattr(convert, "compare_outputs", lambda *a, **k: ({"pred_logits": 2e-4, "pred_boxes": 0.0}, 0))
    assert convert.main([str(src), str(dst), "-c", CFG18, "--verify", "--size", "64"]) == convert.EXIT_VERIFY_FAILED
    assert "verify FAILED" in capsys.readouterr().out
    assert convert.main([str(src), str(dst), "-c", CFG18, "--verify", "--threshold", "1e-3"]) == 0


def test_verify_needs_a_config(tmp_path):
    with pytest.raises(SystemExit) as e:
        convert.parse_args([str(tmp_path / "a"), str(tmp_path / "b"), "--verify"])
    assert e.value.code != 0


def test_anchor_count_matches_the_feature_maps():
    # 64 px: strides 8/16/32 give 8x8 + 4x4 + 2x2 cells; 640 px the official 8400 anchors
    assert convert.anchor_count(64, [8, 16, 32]) == 84
    assert convert.anchor_count(640, [8, 16, 32]) == 8400


def test_unreadable_layout_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"optimizer": {"lr": 1.0}}, path)
    with pytest.raises(CheckpointError, match="no model weights"):
        convert.read_source(str(path))


def test_jittor_int32_counters_become_torch_int64_scalars(tmp_path, fresh_state):
    """A Jittor file may hold ``num_batches_tracked`` as int32 of shape [1] (what
    ``jt.array`` makes of an int64); the .pth gets torch's int64 0-d tensors."""
    src, dst = tmp_path / "w.pkl", tmp_path / "w.pth"
    state = {k: (np.array([v.item()], np.int32) if k.endswith("num_batches_tracked") else v.numpy())
             for k, v in fresh_state.items()}
    jt.save({"model": state}, str(src))
    assert convert.main([str(src), str(dst), "--to", "torch", "-c", CFG18]) == 0
    _assert_same_state(torch.load(dst, map_location="cpu", weights_only=True)["model"], fresh_state)
