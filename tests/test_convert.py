"""Weight conversion (``python -m rtdetr_convert``): PyTorch <-> Jittor, strict checks, --verify,
the formats ``read_state_dict`` tells apart, and the rule that the twins never import each other.

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
from rtdetr_convert import cli, read_state_dict
from rtdetr_convert import verify as verify_module
from rtdetr_convert.write import jittor_conventions, torch_conventions
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
    assert cli.main([str(src), str(mid), "-c", CFG18]) == 0
    jittor_state = _jittor_file(mid)
    counter = "backbone.conv1.conv1_1.norm.num_batches_tracked"
    assert jittor_state[counter].shape == (1,) and jittor_state[counter][0] == fresh_state[counter].item()
    assert cli.main([str(mid), str(back), "--to", "torch", "-c", CFG18]) == 0
    restored = torch.load(back, map_location="cpu", weights_only=True)["model"]
    _assert_same_state(restored, fresh_state)
    assert restored[counter].dim() == 0 and restored[counter].dtype == torch.int64
    model = reference_pytorch.build(CFG18, NO_PRETRAINED).model
    model.load_state_dict(restored, strict=True)  # torch's own strict load
    assert "checked against" in capsys.readouterr().out


def test_wrong_architecture_names_keys_fails_and_writes_nothing(tmp_path, fresh_state, capsys):
    src, dst = tmp_path / "r18.pth", tmp_path / "r50.pkl"
    torch.save({"model": fresh_state}, src)
    code = cli.main([str(src), str(dst), "-c", CFG50])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT != 0
    r18 = set(_official_keys("r18vd"))
    first_missing = next(k for k in _official_keys("r50vd") if k not in r18)  # r50's first key r18 lacks
    assert first_missing in err and "missing" in err and "mis-shaped" in err
    assert not dst.exists()


def test_torch_target_checks_against_the_reference_model(tmp_path, fresh_state, capsys):
    src, dst = tmp_path / "r18.pth", tmp_path / "r50.pth"
    torch.save(fresh_state, src)
    assert cli.main([str(src), str(dst), "--to", "torch", "-c", CFG50]) == cli.EXIT_BAD_INPUT
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
    assert cli.main([str(cut), str(dst)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and str(cut) in err
    assert not dst.exists()


def test_command_line_exit_status_and_message(tmp_path):
    """The module as a program: a cut file gives a one-line error, not a traceback."""
    cut = tmp_path / "cut.pth"
    cut.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    proc = subprocess.run([sys.executable, "-m", "rtdetr_convert", str(cut), str(tmp_path / "o.pkl")],
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
    assert cli.main([str(src), str(dst), "-c", CFG18]) == 0
    got = _jittor_file(dst)
    assert list(got) == list(fresh_state)
    for k, v in fresh_state.items():
        np.testing.assert_array_equal(got[k].reshape(v.shape), v.numpy())


def test_ema_module_is_preferred_over_model(tmp_path, fresh_state, realistic_state):
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pkl"
    torch.save({"model": fresh_state, "ema": {"module": realistic_state}}, src)
    assert cli.main([str(src), str(dst)]) == 0
    key = "decoder.enc_output.0.weight"
    np.testing.assert_array_equal(_jittor_file(dst)[key], realistic_state[key].numpy())


def test_project_checkpoint_converts_to_torch(tmp_path, ref18):
    src, dst = tmp_path / "train.ckpt", tmp_path / "w.pth"
    save_training_checkpoint(str(src), ref18, epoch=1, step=5)
    assert cli.main([str(src), str(dst), "--to", "torch", "-c", CFG18]) == 0
    restored = torch.load(dst, map_location="cpu", weights_only=True)["model"]
    _assert_same_state(restored, ref18.state_dict())


def test_reference_reads_a_jittor_file_strictly(tmp_path, fresh_state):
    src, dst = tmp_path / "src.pth", tmp_path / "w.pkl"
    torch.save(fresh_state, src)
    assert cli.main([str(src), str(dst)]) == 0
    model = reference_pytorch.build(CFG18, NO_PRETRAINED).model
    from reference_pytorch.checkpoint import load_model_state
    load_model_state(model, read_torch_weights(str(dst)), strict=True)
    _assert_same_state(model.state_dict(), fresh_state)


def test_jittor_target_refuses_a_torch_file_name(tmp_path, fresh_state, capsys):
    src = tmp_path / "src.pth"
    torch.save(fresh_state, src)
    assert cli.main([str(src), str(tmp_path / "out.pth")]) == cli.EXIT_BAD_INPUT
    assert ".pkl" in capsys.readouterr().err


def test_counter_conventions():
    state = {"a.num_batches_tracked": np.array(5, np.int64), "a.weight": np.ones((2, 3), np.float32)}
    j = jittor_conventions(state)
    t = torch_conventions(j)
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
    code = cli.main([str(src), str(dst), "--to", to, "-c", CFG18, "--verify", "--size", "64"])
    out = capsys.readouterr().out
    diffs = _printed_diffs(out)
    assert set(diffs) == {"pred_logits", "pred_boxes", "decoder.enc_outputs_class"}
    assert code == 0 and max(diffs.values()) <= verify_module.DEFAULT_THRESHOLD, out
    assert "verify passed" in out


@pytest.mark.parametrize("key,shows_in", [
    ("decoder.dec_score_head.2.bias", "pred_logits"),  # class head of the last (eval) decoder layer
    ("decoder.enc_score_head.bias", "decoder.enc_outputs_class"),  # only ranks queries in eval
])
def test_verify_detects_a_wrongly_converted_tensor(realistic_state, key, shows_in):
    torch_state = {k: v.numpy() for k, v in realistic_state.items()}
    wrong = dict(torch_state)
    wrong[key] = torch_state[key] + np.float32(0.5)
    diffs, _ = verify_module.compare_outputs(CFG18, torch_state, wrong, size=64)
    assert diffs[shows_in] > 0.4  # every score moved by 0.5
    assert diffs["pred_boxes"] <= verify_module.DEFAULT_THRESHOLD  # neither bias is on the box path


def test_verify_imposes_the_reference_query_ranking(realistic_state):
    """A zero encoder score head ties every anchor's score exactly, and the frameworks
    order tied top-k entries differently: left alone, the output rows come out permuted
    (measured 1.1); with the reference's ranking imposed only rounding is left."""
    state = {k: v.numpy().copy() for k, v in realistic_state.items()}
    state["decoder.enc_score_head.weight"][:] = 0
    own, changed = verify_module.compare_outputs(CFG18, state, state, size=64, seed=1, impose_selection=False)
    assert changed > 0 and own["pred_logits"] > 0.1
    imposed, _ = verify_module.compare_outputs(CFG18, state, state, size=64, seed=1)
    assert max(imposed.values()) <= verify_module.DEFAULT_THRESHOLD


def test_verify_failure_exit_status(tmp_path, fresh_state, monkeypatch, capsys):
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pkl"
    torch.save(fresh_state, src)
    monkeypatch.setattr(cli, "verify", lambda *a, **k: ({"pred_logits": 2e-4, "pred_boxes": 0.0}, 0))
    assert cli.main([str(src), str(dst), "-c", CFG18, "--verify", "--size", "64"]) == cli.EXIT_VERIFY_FAILED
    assert "verify FAILED" in capsys.readouterr().out
    assert cli.main([str(src), str(dst), "-c", CFG18, "--verify", "--threshold", "1e-3"]) == 0


def test_verify_needs_a_config(tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.parse_args([str(tmp_path / "a"), str(tmp_path / "b"), "--verify"])
    assert e.value.code != 0


def test_anchor_count_matches_the_feature_maps():
    # 64 px: strides 8/16/32 give 8x8 + 4x4 + 2x2 cells; 640 px the official 8400 anchors
    assert verify_module.anchor_count(64, [8, 16, 32]) == 84
    assert verify_module.anchor_count(640, [8, 16, 32]) == 8400


def test_unreadable_layout_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"optimizer": {"lr": 1.0}}, path)
    with pytest.raises(CheckpointError, match="no model weights") as err:
        read_state_dict(str(path))
    assert str(path) in str(err.value)


def test_jittor_int32_counters_become_torch_int64_scalars(tmp_path, fresh_state):
    """A Jittor file may hold ``num_batches_tracked`` as int32 of shape [1] (what
    ``jt.array`` makes of an int64); the .pth gets torch's int64 0-d tensors."""
    src, dst = tmp_path / "w.pkl", tmp_path / "w.pth"
    state = {k: (np.array([v.item()], np.int32) if k.endswith("num_batches_tracked") else v.numpy())
             for k, v in fresh_state.items()}
    jt.save({"model": state}, str(src))
    assert cli.main([str(src), str(dst), "--to", "torch", "-c", CFG18]) == 0
    _assert_same_state(torch.load(dst, map_location="cpu", weights_only=True)["model"], fresh_state)


# --- formats read_state_dict tells apart ---------------------------------------------------

def test_read_state_dict_names_each_format(tmp_path, fresh_state, ref18):
    """One state written in every format reads back as the same official NumPy state;
    the format comes from the content, not the file name."""
    want = {k: v.numpy() for k, v in fresh_state.items()}
    files = {"torch": tmp_path / "w.pkl", "jittor": tmp_path / "w.pth.bak",
             "checkpoint": tmp_path / "w.bin", "huggingface": tmp_path / "w.pth2"}
    torch.save({"ema": {"module": fresh_state}}, files["torch"])
    jt.save({"model": jittor_conventions(want)}, str(files["jittor"]))
    save_training_checkpoint(str(files["checkpoint"]), ref18, epoch=0, step=0)
    from rtdetr_convert.write import hf_file_tensors
    from safetensors.numpy import save_file
    save_file(hf_file_tensors(want), str(files["huggingface"]), metadata={"format": "pt"})
    for fmt, path in files.items():
        got, found = read_state_dict(path)
        assert found == fmt
        expected = ref18.state_dict() if fmt == "checkpoint" else fresh_state
        keys = sorted if fmt == "huggingface" else list  # safetensors stores its keys sorted
        assert keys(got) == keys(expected), fmt
        for k, v in expected.items():
            assert got[k].dtype == v.numpy().dtype and got[k].shape == tuple(v.shape), (fmt, k)
            np.testing.assert_array_equal(got[k], v.numpy())


def test_torch_file_is_read_without_torch(tmp_path, fresh_state, monkeypatch):
    """Where torch is not installed, Jittor's reader of torch's zip format takes over."""
    path = tmp_path / "w.pth"
    torch.save({"model": fresh_state}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    got, fmt = read_state_dict(path)
    assert fmt == "torch" and list(got) == list(fresh_state)
    for k, v in fresh_state.items():
        np.testing.assert_array_equal(got[k], v.numpy())


@pytest.mark.parametrize("content", [b"", b"\x10\0\0\0\0\0\0\0{\"a\": 1", b"not a pickle"])
def test_unreadable_files_are_checkpoint_errors(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")


# --- HuggingFace target and source -------------------------------------------------------------

def test_hf_target_writes_safetensors_and_config(tmp_path, fresh_state, capsys):
    src, dst = tmp_path / "w.pth", tmp_path / "hf" / "model.safetensors"
    torch.save({"model": fresh_state}, src)
    assert cli.main([str(src), str(dst), "--to", "hf", "-c", CFG18]) == 0
    import json
    config = json.loads((dst.parent / "config.json").read_text())
    assert config["model_type"] == "rt_detr" and config["decoder_layers"] == 3  # r18vd's 3 decoder layers
    assert config["backbone_config"]["layer_type"] == "basic"
    got, fmt = read_state_dict(dst)
    assert fmt == "huggingface" and sorted(got) == sorted(fresh_state)
    for k, v in fresh_state.items():
        np.testing.assert_array_equal(got[k], v.numpy())
    assert cli.main([str(src), str(tmp_path / "model.bin"), "--to", "hf"]) == cli.EXIT_BAD_INPUT
    assert ".safetensors" in capsys.readouterr().err


def test_hf_target_checks_against_huggingface_model(tmp_path, fresh_state, capsys):
    src, dst = tmp_path / "r18.pth", tmp_path / "model.safetensors"
    torch.save({"model": fresh_state}, src)
    assert cli.main([str(src), str(dst), "--to", "hf", "-c", CFG50]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "HuggingFace" in err and "model.backbone.model.encoder.stages.0.layers.0.layer.2" in err
    assert not dst.exists() and not (tmp_path / "config.json").exists()


def test_hf_source_without_counters_converts_with_a_note(tmp_path, fresh_state, capsys):
    """Published HuggingFace files hold no num_batches_tracked; with -c they are completed
    with zeros (and named in the output), everything else stays strict."""
    from safetensors.numpy import save_file
    from rtdetr_convert.write import hf_file_tensors
    src, dst = tmp_path / "model.safetensors", tmp_path / "w.pth"
    tensors = {k: v for k, v in hf_file_tensors({k: v.numpy() for k, v in fresh_state.items()}).items()
               if not k.endswith("num_batches_tracked")}
    save_file(tensors, str(src))
    assert cli.main([str(src), str(dst), "--to", "torch"]) == 0  # no -c: written as read
    assert cli.main([str(src), str(dst), "--to", "torch", "-c", CFG18]) == 0
    counters = [k for k in fresh_state if k.endswith("num_batches_tracked")]
    assert f"{len(counters)} BatchNorm counter(s) completed with 0" in capsys.readouterr().out
    restored = torch.load(dst, map_location="cpu", weights_only=True)["model"]
    assert list(restored) == list(fresh_state) and all(restored[k].item() == 0 for k in counters)
    del tensors["model.enc_score_head.bias"]
    save_file(tensors, str(src))
    assert cli.main([str(src), str(dst), "--to", "torch", "-c", CFG18]) == cli.EXIT_BAD_INPUT
    assert "decoder.enc_score_head.bias" in capsys.readouterr().err


def test_verify_with_hf_target_is_refused(tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.parse_args([str(tmp_path / "a"), str(tmp_path / "b.safetensors"), "--to", "hf", "-c", CFG18, "--verify"])
    assert e.value.code != 0


# --- the twins never import each other ---------------------------------------------------------

def _imported_modules(package):
    import ast
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                tree = ast.parse(open(path).read(), path)
                for node in ast.walk(tree):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                    for module in names:
                        found.setdefault(module.split(".")[0], []).append(os.path.relpath(path, ROOT))
    return found


@pytest.mark.parametrize("package,other", [("rtdetr_jittor", "reference_pytorch"), ("reference_pytorch", "rtdetr_jittor")])
def test_twins_never_import_each_other(package, other):
    imports = _imported_modules(package)
    assert "rtdetr_common" in imports  # the scan sees imports at all
    assert other not in imports, imports.get(other)
