"""Unit tests of the reference backbone (``reference_pytorch.backbone``): official
state_dict names and shapes, parameter counts, stage shapes and strides, variant
layouts, freezing, the frozen BatchNorm, and ``pretrained`` without network."""
import logging
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from rtdetr_common.config import load_config
from reference_pytorch.backbone import ConvNormLayer, FrozenBatchNorm2d, PResNet, freeze_batch_norm2d
from reference_pytorch.backbone.presnet import BasicBlock, BottleNeck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _official_backbone_entries(name):
    with open(os.path.join(ROOT, "fixtures", "official", f"rtdetr_{name}_state_dict.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(k[len("backbone."):], shape) for k, shape in rows if k.startswith("backbone.")]


def _config_args(name):
    return dict(load_config(os.path.join(ROOT, "configs", "rtdetr", f"rtdetr_{name}_6x_coco.yml"))["PResNet"])


def _build(name):
    args = _config_args(name)
    args["pretrained"] = False
    return PResNet(**args)


@pytest.mark.parametrize("name", ["r18vd", "r50vd"])
def test_state_dict_names_shapes_and_order_equal_the_official_backbone(name):
    entries = [(k, str(tuple(v.shape))) for k, v in _build(name).state_dict().items()]
    assert entries == _official_backbone_entries(name)


@pytest.mark.parametrize("name,total,trainable", [
    ("r18vd", 11_199_968, 11_199_968),
    # freeze_at=0 freezes the stem convs: 32*3*9 + 32*32*9 + 64*32*9 = 28,512 weights
    ("r50vd", 23_474_016, 23_474_016 - 28_512),
])
def test_parameter_counts_match_upstream(name, total, trainable):
    model = _build(name)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_r50vd_config_freezes_the_stem_and_every_norm():
    model = _build("r50vd")
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["conv1.conv1_1.conv.weight", "conv1.conv1_2.conv.weight", "conv1.conv1_3.conv.weight"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # one norm per conv: 3 stem + 16 bottlenecks x 3 + 4 projection shortcuts
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == 3 + 16 * 3 + 4


@pytest.mark.parametrize("depth,channels", [
    (18, [64, 128, 256, 512]), (34, [64, 128, 256, 512]),
    (50, [256, 512, 1024, 2048]), (101, [256, 512, 1024, 2048]),
])
@pytest.mark.parametrize("size", [64, 80])
def test_stage_shapes_strides_and_out_channels(depth, channels, size):
    model = PResNet(depth, return_idx=[0, 1, 2, 3], freeze_norm=False).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, size, size))
    assert model.out_channels == channels
    assert model.out_strides == [4, 8, 16, 32]
    # every stride-2 step (stem conv, max-pool, stages 3-5) rounds up on odd sizes
    expected_sizes = []
    s = -(-size // 4)
    for _ in range(4):
        expected_sizes.append(s)
        s = -(-s // 2)
    assert [tuple(o.shape) for o in outs] == [(1, c, h, h) for c, h in zip(channels, expected_sizes)]


def test_return_idx_selects_stages():
    model = PResNet(18, return_idx=[1, 3], freeze_norm=False).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512] == model.out_channels
    assert model.out_strides == [8, 32]


def test_block_counts_per_depth():
    counts = {d: [len(layer.blocks) for layer in PResNet(d, freeze_norm=False).res_layers] for d in (18, 34, 50, 101)}
    assert counts == {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def test_variant_d_stem_and_avgpool_shortcut():
    model = PResNet(50, variant="d", freeze_norm=False)
    stem = [(m.conv.in_channels, m.conv.out_channels, m.conv.kernel_size, m.conv.stride) for m in model.conv1]
    assert stem == [(3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    first = model.res_layers[1].blocks[0]
    assert isinstance(first.short.pool, nn.AvgPool2d) and first.short.pool.ceil_mode
    assert first.short.conv.conv.stride == (1, 1) and first.short.conv.conv.kernel_size == (1, 1)
    # variant b and later: the bottleneck's stride sits in its 3x3 conv
    assert first.branch2a.conv.stride == (1, 1) and first.branch2b.conv.stride == (2, 2)
    # stage 2 keeps the resolution: a plain 1x1 projection shortcut
    assert isinstance(model.res_layers[0].blocks[0].short, ConvNormLayer)
    assert model.res_layers[0].blocks[0].short.conv.stride == (1, 1)


def test_variant_a_and_b_layouts():
    model_b = PResNet(50, variant="b", freeze_norm=False)
    assert model_b.conv1.conv1_1.conv.kernel_size == (7, 7) and len(model_b.conv1) == 1
    short_b = model_b.res_layers[1].blocks[0].short
    assert isinstance(short_b, ConvNormLayer) and short_b.conv.stride == (2, 2)
    block_a = PResNet(50, variant="a", freeze_norm=False).res_layers[1].blocks[0]
    assert block_a.branch2a.conv.stride == (2, 2) and block_a.branch2b.conv.stride == (1, 1)


@pytest.mark.parametrize("block_cls", [BasicBlock, BottleNeck])
def test_identity_block_adds_its_input_before_the_activation(block_cls):
    torch.manual_seed(0)
    ch = 16 if block_cls is BasicBlock else 4
    block = block_cls(ch * block_cls.expansion, ch, stride=1, shortcut=True).eval()
    x = torch.randn(2, ch * block_cls.expansion, 5, 5)
    with torch.no_grad():
        branches = [block.branch2a, block.branch2b] + ([block.branch2c] if block_cls is BottleNeck else [])
        y = x
        for b in branches:
            y = b(y)
        expected = torch.relu(y + x)
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


def test_frozen_batchnorm_equals_batchnorm_in_eval_and_has_only_buffers():
    rng = np.random.default_rng(0)
    c = 6
    w, b = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.5, c)
    rm, rv = rng.normal(0, 1, c), rng.uniform(0.5, 2.0, c)
    frozen = FrozenBatchNorm2d(c)
    frozen.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in
                            dict(weight=w, bias=b, running_mean=rm, running_var=rv).items()})
    assert list(frozen.parameters()) == []
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    x = rng.normal(0, 2, (2, c, 3, 4))
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5) * w[None, :, None, None] \
        + b[None, :, None, None]
    frozen.train()
    got = frozen(torch.tensor(x, dtype=torch.float32)).numpy()
    # float32 against a float64 formula: measured max 3.6e-7 on values ~6
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=2e-6)


def test_frozen_batchnorm_loads_a_batchnorm_checkpoint_dropping_num_batches_tracked():
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    frozen = FrozenBatchNorm2d(3)
    frozen.load_state_dict(bn.state_dict(), strict=True)
    assert torch.equal(frozen.running_mean, torch.tensor([1.0, 2.0, 3.0]))


def test_freeze_batch_norm2d_replaces_every_bn_and_keeps_its_values():
    torch.manual_seed(1)
    layer = ConvNormLayer(3, 4, 3, 1, act="relu")
    seq = nn.Sequential(layer, nn.BatchNorm2d(4))
    with torch.no_grad():
        for bn in (layer.norm, seq[1]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    seq.eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = seq(x)
    out = freeze_batch_norm2d(seq)
    assert out is seq
    assert isinstance(layer.norm, FrozenBatchNorm2d) and isinstance(seq[1], FrozenBatchNorm2d)
    seq.train()
    with torch.no_grad():
        after = seq(x)
    # rsqrt-scale form vs BatchNorm's division: float32 rounding, measured max 7.2e-7 on values ~5
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)
    assert isinstance(freeze_batch_norm2d(nn.BatchNorm2d(2)), FrozenBatchNorm2d)


def test_freeze_at_freezes_the_stem_and_the_first_stages_only():
    model = PResNet(18, freeze_at=2, freeze_norm=False)
    frozen_prefixes = ("conv1.", "res_layers.0.", "res_layers.1.")
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name


def test_frozen_stem_batchnorm_still_updates_running_stats_when_norm_is_not_frozen():
    model = PResNet(18, freeze_at=0, freeze_norm=False).train()
    before = model.conv1.conv1_1.norm.running_mean.clone()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64))
    assert not torch.equal(before, model.conv1.conv1_1.norm.running_mean)
    assert int(model.conv1.conv1_1.norm.num_batches_tracked) == 1


def test_training_gives_gradients_to_trainable_parameters_only():
    model = _build("r50vd").train()
    x = torch.rand(1, 3, 64, 64)
    sum(o.sum() for o in model(x)).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_pretrained_logs_a_warning_and_fetches_nothing(monkeypatch, caplog):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with caplog.at_level(logging.WARNING):
        model = PResNet(18, freeze_norm=False, pretrained=True)
    assert any("not fetched" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert isinstance(model, PResNet)
