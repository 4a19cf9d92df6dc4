"""Official ``rtdetr_pytorch`` state_dict names <-> HuggingFace ``RTDetrForObjectDetection`` names.

Two HuggingFace layouts exist. ``"file"`` is what ``save_pretrained`` writes and what
published checkpoints hold (the module names of transformers 4.x: ``encoder.encoder.N``,
``self_attn.out_proj``, ``fc1``/``fc2`` on the layer); transformers 5 renames them on
load to its ``"module"`` layout (``encoder.aifi.N``, ``self_attn.o_proj``, ``mlp.fc1``),
the names of a live model's ``state_dict()``. Both are read; either can be written.

The mapping is strict: every key must match exactly one rule, in either direction,
and the unmatched ones are named in a ``StateDictError``. Where the two sides do not
correspond key for key, the difference is handled here on purpose:

- **fused attention projection**: the official ``nn.MultiheadAttention`` holds
  ``self_attn.in_proj_weight`` (3d, d) and ``in_proj_bias`` (3d,); HuggingFace splits
  them into ``q_proj``, ``k_proj``, ``v_proj`` (rows in that order). Writing splits into
  thirds; reading needs all three, of one shape, and concatenates them.
- **tied head aliases**: transformers 4.x also stored the decoder heads at top level
  (``class_embed.N.*``, ``bbox_embed.N.layers.M.*``, the same tensors as
  ``model.decoder.class_embed.N.*``). Reading accepts them alone or next to the
  ``model.decoder`` copy, which must then be equal; they are never written.
- **BatchNorm counters** (``num_batches_tracked``) map one to one where present.
  HuggingFace's frozen backbone norm (``RTDetrFrozenBatchNorm2d``, its default)
  stores none, and the published checkpoints were written without any; they count
  training batches and enter no eval forward. ``rtdetr_convert.fit.align_counters``
  completes them against a model.
- In neither state_dict: anchors, valid mask and the encoder's position embedding
  (plain attributes on both sides).
"""
import re

import numpy as np

from rtdetr_common.checkpoint_io import StateDictError

LAYOUTS = ("file", "module")

# What each ``{field}`` of a rule template may match: one dotted component each.
FIELDS = {
    "i": r"\d+", "j": r"\d+", "k": r"\d+",
    "leaf": r"weight|bias|running_mean|running_var|num_batches_tracked",
    "layer": r"conv|norm",
    "conv": r"conv[123]",
    "proj": r"sampling_offsets|attention_weights|value_proj|output_proj",
    "part": r"[qkv]",
}
QKV = ("q", "k", "v")


def _regex(template):
    parts = re.split(r"\{(\w+)\}", template)
    body = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{FIELDS[p]})" for n, p in enumerate(parts))
    return re.compile(body + r"\Z")


class Rule:
    """One official name template and its HuggingFace (file layout) template."""

    def __init__(self, official, hf):
        self.official, self.hf = official, hf
        self.official_re, self.hf_re = _regex(official), _regex(hf)


class FusedRule(Rule):
    """An official fused q/k/v tensor and the three HuggingFace tensors it splits into
    (its HuggingFace template has a ``{part}`` field: q, k, v, in that row order)."""


def _rules():
    """The rules, in file layout."""
    rules = []
    stem, stage = "model.backbone.model.embedder.embedder.", "model.backbone.model.encoder.stages."
    for n in range(3):
        rules += [Rule(f"backbone.conv1.conv1_{n + 1}.conv.weight", f"{stem}{n}.convolution.weight"),
                  Rule(f"backbone.conv1.conv1_{n + 1}.norm.{{leaf}}", f"{stem}{n}.normalization.{{leaf}}")]
    block, layer = "backbone.res_layers.{i}.blocks.{j}.", stage + "{i}.layers.{j}."
    for n, branch in enumerate("abc"):
        rules += [Rule(f"{block}branch2{branch}.conv.weight", f"{layer}layer.{n}.convolution.weight"),
                  Rule(f"{block}branch2{branch}.norm.{{leaf}}", f"{layer}layer.{n}.normalization.{{leaf}}")]
    rules += [  # shortcut: a 1x1 conv, or (downsampling, variant d) average pool then 1x1 conv
        Rule(block + "short.conv.weight", layer + "shortcut.convolution.weight"),
        Rule(block + "short.norm.{leaf}", layer + "shortcut.normalization.{leaf}"),
        Rule(block + "short.conv.conv.weight", layer + "shortcut.1.convolution.weight"),
        Rule(block + "short.conv.norm.{leaf}", layer + "shortcut.1.normalization.{leaf}"),
    ]
    rules.append(Rule("encoder.input_proj.{i}.{j}.{leaf}", "model.encoder_input_proj.{i}.{j}.{leaf}"))
    aifi, hf_aifi = "encoder.encoder.{i}.layers.{j}.", "model.encoder.encoder.{i}.layers.{j}."
    rules += _transformer_layer(aifi, hf_aifi, {"norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"})
    for part in ("lateral_convs", "downsample_convs"):
        rules.append(Rule(f"encoder.{part}.{{i}}.{{layer}}.{{leaf}}", f"model.encoder.{part}.{{i}}.{{layer}}.{{leaf}}"))
    for part in ("fpn_blocks", "pan_blocks"):
        rules += [Rule(f"encoder.{part}.{{i}}.{{conv}}.{{layer}}.{{leaf}}",
                       f"model.encoder.{part}.{{i}}.{{conv}}.{{layer}}.{{leaf}}"),
                  Rule(f"encoder.{part}.{{i}}.bottlenecks.{{k}}.{{conv}}.{{layer}}.{{leaf}}",
                       f"model.encoder.{part}.{{i}}.bottlenecks.{{k}}.{{conv}}.{{layer}}.{{leaf}}")]
    rules += [Rule("decoder.input_proj.{i}.conv.weight", "model.decoder_input_proj.{i}.0.weight"),
              Rule("decoder.input_proj.{i}.norm.{leaf}", "model.decoder_input_proj.{i}.1.{leaf}")]
    dec, hf_dec = "decoder.decoder.layers.{i}.", "model.decoder.layers.{i}."
    rules += _transformer_layer(dec, hf_dec, {"norm1": "self_attn_layer_norm", "norm2": "encoder_attn_layer_norm",
                                              "norm3": "final_layer_norm"})
    rules.append(Rule(dec + "cross_attn.{proj}.{leaf}", hf_dec + "encoder_attn.{proj}.{leaf}"))
    rules += [
        Rule("decoder.denoising_class_embed.weight", "model.denoising_class_embed.weight"),
        Rule("decoder.tgt_embed.weight", "model.weight_embedding.weight"),
        Rule("decoder.query_pos_head.layers.{i}.{leaf}", "model.decoder.query_pos_head.layers.{i}.{leaf}"),
        Rule("decoder.enc_output.{i}.{leaf}", "model.enc_output.{i}.{leaf}"),
        Rule("decoder.enc_score_head.{leaf}", "model.enc_score_head.{leaf}"),
        Rule("decoder.enc_bbox_head.layers.{i}.{leaf}", "model.enc_bbox_head.layers.{i}.{leaf}"),
        Rule("decoder.dec_score_head.{i}.{leaf}", "model.decoder.class_embed.{i}.{leaf}"),
        Rule("decoder.dec_bbox_head.{i}.layers.{j}.{leaf}", "model.decoder.bbox_embed.{i}.layers.{j}.{leaf}"),
    ]
    return rules


def _transformer_layer(official, hf, norms):
    """Self-attention, feed-forward and norms of an encoder or decoder layer."""
    rules = [FusedRule(official + "self_attn.in_proj_{leaf}", hf + "self_attn.{part}_proj.{leaf}"),
             Rule(official + "self_attn.out_proj.{leaf}", hf + "self_attn.out_proj.{leaf}"),
             Rule(official + "linear1.{leaf}", hf + "fc1.{leaf}"),
             Rule(official + "linear2.{leaf}", hf + "fc2.{leaf}")]
    return rules + [Rule(f"{official}{a}.{{leaf}}", f"{hf}{b}.{{leaf}}") for a, b in norms.items()]


RULES = _rules()

# transformers 4.x's top-level copies of the decoder heads (read only; see the module docstring)
ALIASES = [(_regex("class_embed.{i}.{leaf}"), "model.decoder.class_embed.{i}.{leaf}"),
           (_regex("bbox_embed.{i}.layers.{j}.{leaf}"), "model.decoder.bbox_embed.{i}.layers.{j}.{leaf}")]

# file layout <-> module layout of transformers 5 (each side's names never hold the other's)
TO_MODULE = [(re.compile(r"^model\.encoder\.encoder\.(\d+)\.layers\."), r"model.encoder.aifi.\1.layers."),
             (re.compile(r"\.self_attn\.out_proj\."), ".self_attn.o_proj."),
             (re.compile(r"\.layers\.(\d+)\.fc([12])\."), r".layers.\1.mlp.fc\2.")]
TO_FILE = [(re.compile(r"^model\.encoder\.aifi\.(\d+)\.layers\."), r"model.encoder.encoder.\1.layers."),
           (re.compile(r"\.self_attn\.o_proj\."), ".self_attn.out_proj."),
           (re.compile(r"\.layers\.(\d+)\.mlp\.fc([12])\."), r".layers.\1.fc\2.")]


def _rename(name, renames):
    for pattern, repl in renames:
        name = pattern.sub(repl, name)
    return name


def _match(name, side):
    """``(rule, fields)`` of the one rule whose ``side`` template matches ``name``, else None."""
    found = [(rule, m.groupdict()) for rule in RULES for m in [getattr(rule, side + "_re").match(name)] if m]
    if len(found) > 1:
        raise AssertionError(f"{name!r} matches {len(found)} mapping rules")
    return found[0] if found else None


def _unmapped_error(names, direction):
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    return StateDictError(f"{len(names)} key(s) have no {direction} name: {shown}")


def official_to_hf(state, layout="file"):
    """``{official name: array}`` -> ``{HuggingFace name: array}`` in ``layout`` ('file':
    what ``save_pretrained`` writes; 'module': a transformers 5 model's ``state_dict()``).
    Raises ``StateDictError`` naming every key no rule maps, or a fused tensor that does
    not split into three."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    out, unmapped = {}, []
    for name, value in state.items():
        found = _match(name, "official")
        if found is None:
            unmapped.append(name)
            continue
        rule, fields = found
        if isinstance(rule, FusedRule):
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] % 3:
                raise StateDictError(f"{name}: shape {value.shape} does not split into q, k, v thirds")
            targets = [(rule.hf.format(**fields, part=p), v) for p, v in zip(QKV, np.split(value, 3))]
        else:
            targets = [(rule.hf.format(**fields), value)]
        for hf_name, v in targets:
            out[_rename(hf_name, TO_MODULE) if layout == "module" else hf_name] = v
    if unmapped:
        raise _unmapped_error(unmapped, "HuggingFace")
    return out


def hf_to_official(state):
    """``{HuggingFace name: array}`` (file or module layout, transformers 4.x head aliases
    accepted) -> ``{official name: array}``. Raises ``StateDictError`` naming every key no
    rule maps, a q/k/v triple with a part missing or of unequal shapes, or an alias that
    differs from the tensor it should equal."""
    state = _resolve_aliases({_rename(k, TO_FILE): v for k, v in state.items()})
    out, fused, unmapped = {}, {}, []
    for name, value in state.items():
        found = _match(name, "hf")
        if found is None:
            unmapped.append(name)
            continue
        rule, fields = found
        if isinstance(rule, FusedRule):
            part = fields.pop("part")
            official = rule.official.format(**fields)
            out.setdefault(official, None)  # keeps the official position of the fused tensor
            fused.setdefault(official, {})[part] = np.asarray(value)
        else:
            out[rule.official.format(**fields)] = value
    if unmapped:
        raise _unmapped_error(unmapped, "official")
    for official, parts in fused.items():
        if set(parts) != set(QKV):
            raise StateDictError(f"{official}: q/k/v parts {sorted(parts)} found, all three needed")
        if len({parts[p].shape for p in QKV}) != 1:
            raise StateDictError(f"{official}: q/k/v parts differ in shape "
                                 f"{[parts[p].shape for p in QKV]}")
        out[official] = np.concatenate([parts[p] for p in QKV])
    return out


def _resolve_aliases(state):
    """Fold transformers 4.x's top-level head copies into the ``model.decoder`` names."""
    out = {}
    for name, value in state.items():
        target = next((template.format(**m.groupdict()) for pattern, template in ALIASES
                       for m in [pattern.match(name)] if m), None)
        if target is None:
            out.setdefault(name, value)
            continue
        if target in state and not np.array_equal(np.asarray(state[target]), np.asarray(value)):
            raise StateDictError(f"{name} differs from {target}, the decoder head it is a copy of")
        out.setdefault(target, state.get(target, value))
    return out
