"""HuggingFace ``RTDetrConfig`` from this project's (official-format) YAML config.

Every value comes from the resolved config (the YAML, its includes and ``overrides``),
with the reference classes' own defaults for keys the YAML leaves out, read from their
signatures the way the builder does; nothing is copied by hand except the ResNet stage
widths (64, 128, 256, 512: PResNet's fixed ``ch_out_list``).

Settings HuggingFace's model cannot express raise ``ConfigError`` (a PResNet variant
other than 'd', ``depth_mult`` other than 1, an ``eval_idx`` other than the last layer,
an anchor ``eps`` other than 1e-2, ...). One setting is deliberately not carried over:
``HybridEncoder.eval_spatial_size``. HuggingFace's ``eval_size`` makes the AIFI layer
run *without* a position embedding in eval mode (``pos_embed = None``), where the
official encoder uses a precomputed one, so ``eval_size`` is always None here and
HuggingFace computes the embedding for the input it gets (tests/test_hf_reference.py
measures what setting it would change). ``RTDETRTransformer.eval_spatial_size`` becomes
``anchor_image_size``: both precompute float32 anchors for that size.
"""
import inspect

import numpy as np

from rtdetr_common.config import ConfigError, load_config
from rtdetr_common.data.coco_categories import mscoco_category2name, mscoco_label2category
from rtdetr_common.instantiate import SHARED_KEYS

RESNET_WIDTHS = (64, 128, 256, 512)
SUPPORTED = {"backbone": "PResNet", "encoder": "HybridEncoder", "decoder": "RTDETRTransformer"}


def resolved_section(cfg, name, registry):
    """The arguments ``name``'s class gets: its YAML section, shared top-level keys, then
    the class signature's defaults (the builder's precedence)."""
    params = inspect.signature(registry[name].__init__).parameters
    args = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    args.update({k: cfg[k] for k in SHARED_KEYS if k in params and k in cfg})
    args.update(cfg.get(name) or {})
    args.pop("type", None)
    return args


def _require(condition, message):
    if not condition:
        raise ConfigError(f"HuggingFace's RTDetrForObjectDetection cannot express this config: {message}")


def _labels(cfg, num_classes):
    if cfg.get("remap_mscoco_category") and num_classes == len(mscoco_label2category):
        return {label: mscoco_category2name[category] for label, category in mscoco_label2category.items()}
    return None


def hf_config_kwargs(config_path, overrides=None):
    """``(RTDetrResNetConfig kwargs, RTDetrConfig kwargs)`` for the model of ``config_path``."""
    from reference_pytorch.backbone.presnet import BasicBlock, BottleNeck, ResNet_cfg
    from reference_pytorch.builder import REGISTRY
    cfg = load_config(config_path, overrides)
    parts = cfg.get(cfg.get("model"), {}) or {}
    for part, name in SUPPORTED.items():
        _require(parts.get(part, name) == name, f"{part} {parts.get(part)!r} (only {name})")
    backbone, encoder, decoder = (resolved_section(cfg, name, REGISTRY) for name in SUPPORTED.values())
    _require(backbone["variant"] == "d", f"PResNet variant {backbone['variant']!r} (only 'd')")
    _require(backbone["depth"] in ResNet_cfg, f"PResNet depth {backbone['depth']}")
    _require(encoder["depth_mult"] == 1, f"HybridEncoder depth_mult {encoder['depth_mult']} (3 RepVGG blocks only)")
    _require(decoder["eval_idx"] in (-1, decoder["num_decoder_layers"] - 1),
             f"eval_idx {decoder['eval_idx']} (the last decoder layer only)")
    _require(decoder["eps"] == 1e-2, f"anchor eps {decoder['eps']} (1e-2 only)")
    _require(decoder["position_embed_type"] == "sine", f"position_embed_type {decoder['position_embed_type']!r}")
    _require(list(decoder["feat_strides"]) == list(encoder["feat_strides"]),
             "decoder feat_strides differ from the encoder's")
    _require(decoder["dropout"] == encoder["dropout"], "encoder and decoder dropout differ (one `dropout`)")
    block = BottleNeck if backbone["depth"] >= 50 else BasicBlock
    stages = backbone["num_stages"]
    resnet = dict(
        embedding_size=RESNET_WIDTHS[0],
        hidden_sizes=[w * block.expansion for w in RESNET_WIDTHS][:stages],
        depths=list(ResNet_cfg[backbone["depth"]])[:stages],
        layer_type="bottleneck" if block is BottleNeck else "basic",
        hidden_act=backbone["act"],
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,  # variant d: the stride sits in the 3x3 conv
        out_indices=[i + 1 for i in backbone["return_idx"]],  # HF's index 0 is the stem
    )
    anchors = decoder["eval_spatial_size"]
    rtdetr = dict(
        num_labels=decoder["num_classes"],
        freeze_backbone_batch_norms=bool(backbone["freeze_norm"]),
        encoder_hidden_dim=encoder["hidden_dim"],
        encoder_in_channels=list(encoder["in_channels"]),
        feat_strides=list(encoder["feat_strides"]),
        encoder_layers=encoder["num_encoder_layers"],
        encoder_ffn_dim=encoder["dim_feedforward"],
        encoder_attention_heads=encoder["nhead"],
        dropout=encoder["dropout"],
        attention_dropout=decoder["dropout"],
        encode_proj_layers=list(encoder["use_encoder_idx"]),
        positional_encoding_temperature=encoder["pe_temperature"],
        encoder_activation_function=encoder["enc_act"],
        activation_function=encoder["act"],
        eval_size=None,  # see the module docstring
        normalize_before=False,
        hidden_expansion=encoder["expansion"],
        d_model=decoder["hidden_dim"],
        num_queries=decoder["num_queries"],
        decoder_in_channels=list(decoder["feat_channels"]),
        decoder_ffn_dim=decoder["dim_feedforward"],
        num_feature_levels=decoder["num_levels"],
        decoder_n_points=decoder["num_decoder_points"],
        decoder_layers=decoder["num_decoder_layers"],
        decoder_attention_heads=decoder["nhead"],
        decoder_activation_function=decoder["activation"],
        num_denoising=decoder["num_denoising"],
        label_noise_ratio=decoder["label_noise_ratio"],
        box_noise_scale=decoder["box_noise_scale"],
        learn_initial_query=decoder["learnt_init_query"],
        anchor_image_size=list(anchors) if anchors else None,
        with_box_refine=True,
        auxiliary_loss=decoder["aux_loss"],
        use_focal_loss=bool(cfg.get("use_focal_loss", True)),
        **_loss_kwargs(cfg, REGISTRY),
    )
    labels = _labels(cfg, decoder["num_classes"])
    if labels:
        rtdetr["id2label"] = labels
        rtdetr["label2id"] = {name: label for label, name in labels.items()}
    return resnet, rtdetr


def _loss_kwargs(cfg, registry):
    """Matcher and criterion weights (used by HuggingFace's training loss only)."""
    if "SetCriterion" not in cfg:
        return {}
    criterion = resolved_section(cfg, "SetCriterion", registry)
    weights = criterion["weight_dict"]
    matcher = dict(criterion.get("matcher") or {})
    out = dict(focal_loss_alpha=criterion["alpha"], focal_loss_gamma=criterion["gamma"],
               weight_loss_vfl=weights.get("loss_vfl", 1.0), weight_loss_bbox=weights.get("loss_bbox", 5.0),
               weight_loss_giou=weights.get("loss_giou", 2.0), eos_coefficient=criterion["eos_coef"])
    if matcher:
        matcher = {**resolved_section(cfg, "HungarianMatcher", registry), **matcher}
        costs = matcher["weight_dict"]
        out.update(matcher_alpha=matcher["alpha"], matcher_gamma=matcher["gamma"],
                   matcher_class_cost=costs["cost_class"], matcher_bbox_cost=costs["cost_bbox"],
                   matcher_giou_cost=costs["cost_giou"])
    return {k: float(v) for k, v in out.items()}  # RTDetrConfig's fields are typed float


def hf_config(config_path, overrides=None):
    """The ``transformers.RTDetrConfig`` of ``config_path`` (with ``overrides``)."""
    from transformers import RTDetrConfig, RTDetrResNetConfig
    resnet, rtdetr = hf_config_kwargs(config_path, overrides)
    return RTDetrConfig(backbone_config=RTDetrResNetConfig(**resnet), **rtdetr)


def hf_model(config_path, overrides=None, state=None):
    """A ``transformers.RTDetrForObjectDetection`` of ``config_path`` in eval mode: with
    ``state`` (official names) moved in through ``rtdetr_convert.hf`` and loaded
    strictly (no HuggingFace initialisation is run first), else freshly initialised."""
    from transformers import RTDetrForObjectDetection
    from transformers.initialization import no_init_weights
    config = hf_config(config_path, overrides)
    if state is None:
        return RTDetrForObjectDetection(config).eval()
    import torch
    from rtdetr_common.checkpoint_io import StateDictError
    from .hf import official_to_hf
    with no_init_weights():
        model = RTDetrForObjectDetection(config)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in official_to_hf(state, "module").items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise StateDictError(f"weights do not fit HuggingFace's model: {' '.join(str(e).split())}") from e
    return model.eval()
