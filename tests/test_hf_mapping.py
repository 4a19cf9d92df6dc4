"""Official <-> HuggingFace state_dict names (``rtdetr_convert.hf``) and the HuggingFace
config derived from our YAML (``rtdetr_convert.hf_config``).

The official key lists and shapes come from ``fixtures/official`` (the published
checkpoints' state_dicts); the HuggingFace settings expected for r18vd are the ones
HuggingFace's own conversion script uses for the published ``rtdetr_r18vd``
(``get_rt_detr_config`` in ``convert_rt_detr_original_pytorch_checkpoint_to_hf.py``),
and r50vd's are ``RTDetrConfig``'s defaults, which describe rtdetr_r50vd.
"""
import ast
import os

import numpy as np
import pytest

from rtdetr_common.checkpoint_io import StateDictError
from rtdetr_common.config import ConfigError
from rtdetr_convert.fit import align_counters
from rtdetr_convert.hf import hf_to_official, official_to_hf
from rtdetr_convert.hf_config import hf_config, hf_config_kwargs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {name: os.path.join(ROOT, "configs", "rtdetr", f"rtdetr_{name}_6x_coco.yml") for name in ("r18vd", "r50vd")}


def official_state(name, seed=0):
    """Random arrays of the published checkpoint's keys and shapes, in its order."""
    rng = np.random.default_rng(seed)
    state = {}
    with open(os.path.join(ROOT, "fixtures", "official", f"rtdetr_{name}_state_dict.tsv")) as f:
        for line in f:
            if line.strip():
                key, shape = line.rstrip("\n").split("\t")
                shape = ast.literal_eval(shape)
                state[key] = (np.array(rng.integers(0, 1000), np.int64) if key.endswith("num_batches_tracked")
                              else rng.normal(size=shape).astype(np.float32))
    return state


@pytest.mark.parametrize("layout", ["file", "module"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_is_exact(name, layout):
    state = official_state(name)
    hf = official_to_hf(state, layout)
    fused = [k for k in state if k.endswith(("in_proj_weight", "in_proj_bias"))]
    assert fused and len(hf) == len(state) + 2 * len(fused)  # each fused tensor becomes three
    back = hf_to_official(hf)
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)


def test_fused_projection_splits_into_q_k_v_rows():
    state = official_state("r18vd")
    key = "decoder.decoder.layers.0.self_attn.in_proj_weight"
    hf = official_to_hf(state)
    d = state[key].shape[1]
    for i, part in enumerate("qkv"):
        np.testing.assert_array_equal(hf[f"model.decoder.layers.0.self_attn.{part}_proj.weight"],
                                      state[key][i * d:(i + 1) * d])


def test_layouts_differ_only_in_transformers_5_renames():
    hf_file, hf_module = official_to_hf(official_state("r18vd"), "file"), official_to_hf(official_state("r18vd"), "module")
    renamed = sorted(set(hf_module) - set(hf_file))
    assert renamed and all(".aifi." in k or ".o_proj." in k or ".mlp.fc" in k for k in renamed)
    assert "model.encoder.encoder.0.layers.0.fc1.weight" in hf_file
    assert "model.encoder.aifi.0.layers.0.mlp.fc1.weight" in hf_module


def test_unmapped_keys_are_named_both_ways():
    state = official_state("r18vd")
    with pytest.raises(StateDictError, match=r"1 key\(s\) have no HuggingFace name: decoder\.extra\.weight"):
        official_to_hf({**state, "decoder.extra.weight": np.zeros(2, np.float32)})
    hf = official_to_hf(state)
    with pytest.raises(StateDictError, match=r"have no official name: model\.extra\.bias"):
        hf_to_official({**hf, "model.extra.bias": np.zeros(2, np.float32)})
    with pytest.raises(StateDictError, match="does not split into q, k, v"):
        official_to_hf({"encoder.encoder.0.layers.0.self_attn.in_proj_bias": np.zeros(7, np.float32)})


def test_incomplete_or_mismatched_q_k_v_is_refused():
    hf = official_to_hf(official_state("r18vd"))
    v = "model.decoder.layers.2.self_attn.v_proj.weight"
    with pytest.raises(StateDictError, match=r"decoder\.decoder\.layers\.2\.self_attn\.in_proj_weight.*all three"):
        hf_to_official({k: a for k, a in hf.items() if k != v})
    with pytest.raises(StateDictError, match="differ in shape"):
        hf_to_official({**hf, v: hf[v][:-1]})


def test_transformers_4_head_aliases():
    """Older files also hold the decoder heads at top level (``class_embed.N``): alone they
    stand for the decoder's heads; next to them they must be equal."""
    state = official_state("r18vd")
    hf = official_to_hf(state)
    heads = {k: v for k, v in hf.items() if k.startswith(("model.decoder.class_embed.", "model.decoder.bbox_embed."))}
    aliases = {k[len("model.decoder."):]: v for k, v in heads.items()}
    alone = {**{k: v for k, v in hf.items() if k not in heads}, **aliases}
    for got in (hf_to_official(alone), hf_to_official({**hf, **aliases})):
        assert set(got) == set(state)
        for k, v in state.items():
            np.testing.assert_array_equal(got[k], v)
    wrong = dict(aliases)
    wrong["class_embed.1.bias"] = wrong["class_embed.1.bias"] + 1
    with pytest.raises(StateDictError, match=r"class_embed\.1\.bias differs from model\.decoder\.class_embed\.1\.bias"):
        hf_to_official({**hf, **wrong})


def test_align_counters_touches_counters_only():
    state = {"a.weight": np.ones(2), "a.num_batches_tracked": np.array(3), "b.num_batches_tracked": np.array(4)}
    keys = ["a.weight", "a.num_batches_tracked", "c.num_batches_tracked", "d.weight"]
    out, added, dropped = align_counters(state, keys)
    assert added == ["c.num_batches_tracked"] and dropped == ["b.num_batches_tracked"]
    assert set(out) == {"a.weight", "a.num_batches_tracked", "c.num_batches_tracked"}  # d.weight stays missing
    assert int(out["c.num_batches_tracked"]) == 0 and int(out["a.num_batches_tracked"]) == 3


# --- config -----------------------------------------------------------------------------------

def test_r18vd_config_is_the_published_one():
    resnet, rtdetr = hf_config_kwargs(CONFIGS["r18vd"])
    assert resnet["hidden_sizes"] == [64, 128, 256, 512] and resnet["depths"] == [2, 2, 2, 2]
    assert resnet["layer_type"] == "basic" and resnet["out_indices"] == [2, 3, 4]
    assert rtdetr["encoder_in_channels"] == [128, 256, 512] and rtdetr["hidden_expansion"] == 0.5
    assert rtdetr["decoder_layers"] == 3 and rtdetr["num_labels"] == 80
    assert rtdetr["id2label"][0] == "person" and rtdetr["id2label"][79] == "toothbrush"
    assert rtdetr["freeze_backbone_batch_norms"] is False  # r18vd trains its backbone norms


def test_r50vd_config_matches_transformers_defaults():
    """``RTDetrConfig()`` describes rtdetr_r50vd; ours differs only where stated."""
    from transformers import RTDetrConfig
    ours, default = hf_config(CONFIGS["r50vd"]).to_dict(), RTDetrConfig().to_dict()
    differ = sorted(k for k in default if k in ours and ours[k] != default[k]
                    and k not in ("backbone_config", "id2label", "label2id", "transformers_version"))
    assert differ == ["anchor_image_size"], differ  # float32 anchors for the official 640x640 eval size
    assert ours["anchor_image_size"] == [640, 640]
    assert ours["backbone_config"] == default["backbone_config"]


@pytest.mark.parametrize("override,message", [
    ({"PResNet": {"variant": "b"}}, "variant 'b'"),
    ({"HybridEncoder": {"depth_mult": 0.5}}, "depth_mult"),
    ({"RTDETRTransformer": {"eval_idx": 0}}, "eval_idx"),
    ({"RTDETRTransformer": {"feat_strides": [8, 16, 64]}}, "feat_strides"),
])
def test_config_huggingface_cannot_express_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        hf_config_kwargs(CONFIGS["r18vd"], override)
