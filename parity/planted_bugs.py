"""Deliberate bugs planted in the Jittor twin, to prove the harness catches them.

Each ``PlantedBug`` is applied to a built ``Pair`` for the duration of a ``with``
block and names where the harness must locate it: the module path (or probe) of the
first tensor out of tolerance. A harness that passes a planted bug is broken.
"""
import contextlib
import types
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlantedBug:
    name: str
    mode: str            # "eval" or "train"
    expected: str        # module path or tensor name prefix where it must be caught
    description: str


@contextlib.contextmanager
def epsilon(pair):
    ln = pair.jt.model.decoder.enc_output[1]
    old = ln.eps
    ln.eps = 1e-2
    try:
        yield
    finally:
        ln.eps = old


@contextlib.contextmanager
def align_corners(pair):
    from rtdetr_jittor._env import jt  # noqa: F401
    from jittor import nn
    from rtdetr_jittor.rtdetr import utils
    attn = pair.jt.model.decoder.decoder.layers[0].cross_attn
    original = nn.grid_sample

    def core_with_align_corners(*args, **kwargs):
        nn.grid_sample = lambda *a, **k: original(*a, **{**k, "align_corners": True})
        try:
            return utils.deformable_attention_core_func(*args, **kwargs)
        finally:
            nn.grid_sample = original

    old = attn.ms_deformable_attn_core
    attn.ms_deformable_attn_core = core_with_align_corners
    try:
        yield
    finally:
        attn.ms_deformable_attn_core = old


def _encoder_layer_without_ffn_residual(self, src, src_mask=None, pos_embed=None):
    residual = src
    q = k = self.with_pos_embed(src, pos_embed)
    src, _ = self.self_attn(q, k, value=src, attn_mask=src_mask)
    src = self.norm1(residual + self.dropout1(src))
    src = self.linear2(self.dropout(self.activation(self.linear1(src))))
    return self.norm2(self.dropout2(src))


@contextlib.contextmanager
def dropped_residual(pair):
    layer = pair.jt.model.encoder.encoder[0].layers[0]
    layer.execute = types.MethodType(_encoder_layer_without_ffn_residual, layer)
    try:
        yield
    finally:
        del layer.execute


@contextlib.contextmanager
def transposed_weight(pair):
    key = "decoder.decoder.layers.0.cross_attn.value_proj.weight"
    pair.jittor_weight_edits[key] = np.ascontiguousarray(pair.weights[key].T)
    try:
        yield
    finally:
        del pair.jittor_weight_edits[key]


@contextlib.contextmanager
def swapped_box_format(pair):
    from rtdetr_jittor.rtdetr import rtdetr_postprocessor
    old = rtdetr_postprocessor.box_cxcywh_to_xyxy
    rtdetr_postprocessor.box_cxcywh_to_xyxy = lambda boxes: boxes
    try:
        yield
    finally:
        rtdetr_postprocessor.box_cxcywh_to_xyxy = old


@contextlib.contextmanager
def denoising_mask_off_by_one(pair):
    from rtdetr_jittor._env import jt
    from rtdetr_jittor.rtdetr import rtdetr_decoder
    old = rtdetr_decoder.get_contrastive_denoising_training_group

    def shifted(*args, **kwargs):
        out = old(*args, **kwargs)
        if out[2] is None:
            return out
        mask = out[2].numpy()
        return out[0], out[1], jt.array(np.roll(mask, 1, axis=1)), out[3]

    rtdetr_decoder.get_contrastive_denoising_training_group = shifted
    try:
        yield
    finally:
        rtdetr_decoder.get_contrastive_denoising_training_group = old


@contextlib.contextmanager
def in_place_detach(pair):
    from rtdetr_jittor import compat
    old = compat.detach
    compat.detach = lambda x: x.stop_grad()
    try:
        yield
    finally:
        compat.detach = old


BUGS = {
    "epsilon": (PlantedBug("epsilon", "eval", "decoder.enc_output.1",
                           "LayerNorm eps 1e-2 instead of 1e-5 in the encoder-output head"), epsilon),
    "align_corners": (PlantedBug("align_corners", "eval", "decoder.decoder.layers.0.cross_attn",
                                 "grid_sample with align_corners=True in the first decoder layer"), align_corners),
    "dropped_residual": (PlantedBug("dropped_residual", "eval", "encoder.encoder.0.layers.0",
                                    "the FFN residual of the intra-scale encoder layer left out"), dropped_residual),
    "transposed_weight": (PlantedBug("transposed_weight", "eval", "decoder.decoder.layers.0.cross_attn.value_proj",
                                     "a square weight transposed on transfer"), transposed_weight),
    "swapped_box_format": (PlantedBug("swapped_box_format", "eval", "probe:postprocessor.boxes",
                                      "post-processor scales cxcywh as if it were xyxy"), swapped_box_format),
    "denoising_mask_off_by_one": (PlantedBug("denoising_mask_off_by_one", "train", "decoder.decoder.layers.0.self_attn",
                                             "denoising attention mask shifted by one column on its way to the "
                                             "decoder (after its probe): caught where the first layer uses it"),
                                  denoising_mask_off_by_one),
    "in_place_detach": (PlantedBug("in_place_detach", "train", "grad:decoder.dec_bbox_head.0",
                                   "x.stop_grad() (in place) where torch's x.detach() is meant"), in_place_detach),
}
