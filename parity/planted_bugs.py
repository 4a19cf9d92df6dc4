"""Deliberate bugs planted in the Jittor twin, to prove the harness catches them.

Each bug looks like a real porting mistake and is planted in the code path that
actually runs: an attribute of a live module (an epsilon, a noise scale, a momentum),
a name the twin's own code looks up at call time (``compat.detach``, the matcher's
solver, ``build_optimizer``), or a wrapper that calls the twin's own function with one
argument wrong. None switches the twin onto another implementation. ``BUGS`` maps a
name to ``(PlantedBug, plant)``, where ``plant(pair)`` is a context manager; the
``PlantedBug`` says in which mode and on which input the bug shows (``needs``:
``non-square`` for bugs a square input cannot reveal, ``multi-scale`` for the resize,
``steps`` for optimizer, EMA and BatchNorm state), the pattern (``re.match``) of the
first failing tensor, and whether the forward pass is untouched (a gradient-only bug:
then no forward tensor may fail, and the pattern names the gradient of the parameter
the bug cuts off or adds a path to, which must fail).
"""
import contextlib
import math
import types
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlantedBug:
    name: str
    mode: str              # "eval", "train" or "steps"
    expected: str          # regex the first failing tensor's name must match
    description: str
    needs: str = ""        # "", "non-square" or "multi-scale"
    gradient_only: bool = False


@contextlib.contextmanager
def _patched(owner, attribute, value):
    old = getattr(owner, attribute)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, old)


def layernorm_eps(pair):
    return _patched(pair.jt.model.decoder.enc_output[1], "eps", 1e-6)


def tanh_gelu(pair):
    from rtdetr_jittor._env import jt
    from jittor import nn

    class TanhGELU(nn.Module):
        """The tanh approximation of GELU (the official model uses the exact erf form)."""

        def execute(self, x):
            return 0.5 * x * (1 + jt.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    return _patched(pair.jt.model.encoder.encoder[0].layers[0], "activation", TanhGELU())


def loss_weight(pair):
    weights = dict(pair.jt.criterion.weight_dict)
    weights["loss_bbox"] *= 1.001
    return _patched(pair.jt.criterion, "weight_dict", weights)


def pos_embed_width_height(pair):
    encoder = pair.jt.model.encoder
    build = encoder.build_2d_sincos_position_embedding
    return _patched(encoder, "build_2d_sincos_position_embedding",
                    lambda w, h, *args, **kwargs: build(h, w, *args, **kwargs))


def level_shapes_transposed(pair):
    attn = pair.jt.model.decoder.decoder.layers[0].cross_attn
    core = attn.ms_deformable_attn_core
    return _patched(attn, "ms_deformable_attn_core",
                    lambda value, shapes, *args: core(value, [[w, h] for h, w in shapes], *args))


def dropped_residual(pair):
    def without_ffn_residual(self, src, src_mask=None, pos_embed=None):
        residual = src
        q = k = self.with_pos_embed(src, pos_embed)
        src, _ = self.self_attn(q, k, value=src, attn_mask=src_mask)
        src = self.norm1(residual + self.dropout1(src))
        src = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(self.dropout2(src))

    layer = pair.jt.model.encoder.encoder[0].layers[0]
    return _patched(layer, "execute", types.MethodType(without_ffn_residual, layer))


@contextlib.contextmanager
def transposed_weight(pair):
    key = "decoder.decoder.layers.0.cross_attn.value_proj.weight"
    pair.jittor_weight_edits[key] = np.ascontiguousarray(pair.weights[key].T)
    try:
        yield
    finally:
        del pair.jittor_weight_edits[key]


def boxes_not_converted(pair):
    from rtdetr_jittor.rtdetr import rtdetr_postprocessor
    return _patched(rtdetr_postprocessor, "box_cxcywh_to_xyxy", lambda boxes: boxes)


def denoising_mask_shifted(pair):
    from rtdetr_jittor._env import jt
    from rtdetr_jittor.rtdetr import rtdetr_decoder
    build = rtdetr_decoder.get_contrastive_denoising_training_group

    def shifted(*args, **kwargs):
        out = build(*args, **kwargs)
        if out[2] is None:
            return out
        return out[0], out[1], jt.array(np.roll(out[2].numpy(), 1, axis=1)), out[3]

    return _patched(rtdetr_decoder, "get_contrastive_denoising_training_group", shifted)


def denoising_noise_scale(pair):
    return _patched(pair.jt.model.decoder, "box_noise_scale", 0.5)


def detach_is_noop(pair):
    from rtdetr_jittor import compat
    return _patched(compat, "detach", lambda x: x)


def detach_in_place(pair):
    from rtdetr_jittor import compat
    return _patched(compat, "detach", lambda x: x.stop_grad())


def topk_smallest(pair):
    from rtdetr_jittor import compat
    topk = compat.topk
    return _patched(compat, "topk", lambda x, k, dim=-1, largest=True: topk(x, k, dim=dim, largest=not largest))


def matcher_maximises(pair):
    from rtdetr_jittor.rtdetr import matcher
    solve = matcher.linear_sum_assignment
    return _patched(matcher, "linear_sum_assignment", lambda cost: solve(-np.asarray(cost)))


def matcher_focal_alpha(pair):
    return _patched(pair.jt.criterion.matcher, "alpha", 1 - pair.jt.criterion.matcher.alpha)


def resize_bilinear(pair):
    from rtdetr_jittor.rtdetr import rtdetr
    real = rtdetr.nn
    proxy = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
    proxy.interpolate = lambda x, size=None, mode="bilinear", **kwargs: real.interpolate(x, size=size, mode="bilinear")
    return _patched(rtdetr, "nn", proxy)


def adamw_decay_group_lost(pair):
    from rtdetr_jittor.optim.optim import AdamW
    init = AdamW.__init__

    def init_without_group_decay(self, groups, *args, **kwargs):
        init(self, groups, *args, **kwargs)
        for group in self.param_groups:
            group["weight_decay"] = self.defaults["weight_decay"]

    return _patched(AdamW, "__init__", init_without_group_decay)


def ema_default_warmups(pair):
    from rtdetr_jittor.optim.ema import ModelEMA
    init = ModelEMA.__init__

    def init_ignoring_config_warmups(self, model, decay=0.9999, warmups=2000):
        init(self, model, decay)

    return _patched(ModelEMA, "__init__", init_ignoring_config_warmups)


def batchnorm_momentum(pair):
    return _patched(pair.jt.model.backbone.conv1.conv1_1.norm, "momentum", 0.9)


BUGS = {bug.name: (bug, plant) for bug, plant in [
    (PlantedBug("layernorm_eps", "eval", r"decoder\.enc_output\.1$",
                "LayerNorm eps 1e-6 where the official model has 1e-5 (encoder-output head)"), layernorm_eps),
    (PlantedBug("tanh_gelu", "eval", r"encoder\.encoder\.0\.layers\.0\.activation$",
                "GELU's tanh approximation where the official model uses the exact erf form"), tanh_gelu),
    (PlantedBug("loss_weight", "train", r"probe:criterion\.loss_bbox",
                "loss_bbox weighted 0.1% too high"), loss_weight),
    (PlantedBug("pos_embed_width_height", "eval", r"probe:encoder\.pos_embed$",
                "position embedding built with width and height swapped", needs="non-square"),
     pos_embed_width_height),
    (PlantedBug("level_shapes_transposed", "eval", r"decoder\.decoder\.layers\.0\.cross_attn\.output_proj$",
                "deformable attention reads each level as (w, h) instead of (h, w)", needs="non-square"),
     level_shapes_transposed),
    (PlantedBug("dropped_residual", "eval", r"encoder\.encoder\.0\.layers\.0",
                "the FFN residual of the intra-scale encoder layer left out"), dropped_residual),
    (PlantedBug("transposed_weight", "eval", r"decoder\.decoder\.layers\.0\.cross_attn\.value_proj$",
                "a square weight transposed on transfer"), transposed_weight),
    (PlantedBug("boxes_not_converted", "eval", r"probe:postprocessor\.boxes$",
                "post-processor scales cxcywh as if it were xyxy"), boxes_not_converted),
    (PlantedBug("denoising_mask_shifted", "train", r"decoder\.decoder\.layers\.0\.self_attn",
                "denoising attention mask shifted by one column after its probe: caught where the "
                "first decoder layer uses it"), denoising_mask_shifted),
    (PlantedBug("denoising_noise_scale", "train", r"probe:decoder\.dn\.input_query_bbox$",
                "denoising box noise scale 0.5 where the config says 1.0"), denoising_noise_scale),
    (PlantedBug("detach_is_noop", "train", r"grad:decoder\.dec_bbox_head\.0\.",
                "detach() made a no-op: the decoder's reference points keep their gradient path",
                gradient_only=True), detach_is_noop),
    (PlantedBug("detach_in_place", "train", r"grad:decoder\.dec_bbox_head\.0\.",
                "x.stop_grad() (in place) where torch's x.detach() is meant", gradient_only=True),
     detach_in_place),
    (PlantedBug("topk_smallest", "eval", r"probe:decoder\.topk_ind$",
                "the encoder's top-k picks the lowest scores (forced from the reference downstream)"),
     topk_smallest),
    (PlantedBug("matcher_maximises", "train", r"probe:matcher\.indices\.",
                "the Hungarian solver maximises the cost (forced from the reference downstream)"),
     matcher_maximises),
    (PlantedBug("matcher_focal_alpha", "train", r"probe:matcher\.cost",
                "the matcher's focal class cost with alpha and 1 - alpha swapped"), matcher_focal_alpha),
    (PlantedBug("resize_bilinear", "train", r"probe:input\.resized$",
                "the multi-scale resize falls back to Jittor's default bilinear mode", needs="multi-scale"),
     resize_bilinear),
    (PlantedBug("adamw_decay_group_lost", "steps", r"step1:weight_decay:group0$",
                "AdamW's no-decay group (norms, biases) decayed with the default weight decay"),
     adamw_decay_group_lost),
    (PlantedBug("ema_default_warmups", "steps", r"step1:ema_decay$",
                "EMA warm-up left at the class default (2000) instead of the config's"), ema_default_warmups),
    (PlantedBug("batchnorm_momentum", "steps", r"step1:buffer:backbone\.conv1\.conv1_1\.norm\.running_",
                "BatchNorm momentum 0.9 (the Keras convention) in the stem"), batchnorm_momentum),
]}
