"""RT-DETR transformer decoder (``RTDETRTransformer``), Jittor twin.

Input projection of the encoder's feature maps, anchor generation, the encoder
head that scores every memory token and selects the top-k as initial queries,
contrastive denoising queries in training, and the deformable transformer decoder
with iterative box refinement. Class, attribute and argument names are those of
the reference (``reference_pytorch/rtdetr/rtdetr_decoder.py``), so its state_dict
loads here unchanged.

Framework differences: ``compat.detach`` (out of place) wherever torch detaches;
``compat.topk``/``compat.max_values`` for the top-k selection; ``compat.sigmoid`` and
``compat.softmax`` (``docs/TWINS.md``: a shim wherever one exists); ``compat.LayerNorm``,
``compat.BatchNorm2d``, ``compat.MultiheadAttention`` and ``compat.Embedding``
(padding row gets no gradient); the anchors and valid mask live in ``_anchors`` /
``_valid_mask`` (out of the state_dict and out of training); Dropout is created in
training mode, as torch's.
"""
import copy
import math
from collections import OrderedDict

import numpy as np

from rtdetr_jittor._env import jt
from jittor import nn
from jittor import init

from rtdetr_common import probes
from rtdetr_jittor import compat

from .denoising import get_contrastive_denoising_training_group
from .utils import bias_init_with_prob, deformable_attention_core_func, get_activation, inverse_sigmoid

__all__ = ["RTDETRTransformer", "MLP", "MSDeformableAttention", "TransformerDecoderLayer", "TransformerDecoder"]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ``act`` between them (none after the last)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers, act="relu"):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList([nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim])])
        self.act = nn.Identity() if act is None else get_activation(act)

    def execute(self, x):
        for i, layer in enumerate(self.layers):
            x = self.act(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class MSDeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR) with box reference points."""

    def __init__(self, embed_dim=256, num_heads=8, num_levels=4, num_points=4):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.total_points = num_heads * num_levels * num_points

        self.head_dim = embed_dim // num_heads
        assert self.head_dim * num_heads == self.embed_dim, "embed_dim must be divisible by num_heads"

        self.sampling_offsets = nn.Linear(embed_dim, self.total_points * 2)
        self.attention_weights = nn.Linear(embed_dim, self.total_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)

        self.ms_deformable_attn_core = deformable_attention_core_func

        self._reset_parameters()

    def _reset_parameters(self):
        # sampling_offsets: zero weight, bias = one direction per head, scaled by point index
        init.constant_(self.sampling_offsets.weight, 0)
        thetas = jt.arange(self.num_heads, dtype="float32") * (2.0 * math.pi / self.num_heads)
        grid_init = jt.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = grid_init / grid_init.abs().max(-1, keepdims=True)
        grid_init = grid_init.reshape(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        scaling = jt.arange(1, self.num_points + 1, dtype="float32").reshape(1, 1, -1, 1)
        grid_init *= scaling
        self.sampling_offsets.bias.assign(grid_init.flatten())

        # attention_weights
        init.constant_(self.attention_weights.weight, 0)
        init.constant_(self.attention_weights.bias, 0)

        # proj
        init.xavier_uniform_(self.value_proj.weight)
        init.constant_(self.value_proj.bias, 0)
        init.xavier_uniform_(self.output_proj.weight)
        init.constant_(self.output_proj.bias, 0)

    def execute(self, query, reference_points, value, value_spatial_shapes, value_mask=None):
        """query (B, Lq, C); reference_points (B, Lq, n_levels or 1, 2 or 4) in [0, 1];
        value (B, Lv, C); value_spatial_shapes [(H, W)] per level; value_mask (B, Lv),
        1/True = keep. Returns (B, Lq, C)."""
        bs, len_q = query.shape[:2]
        len_v = value.shape[1]

        value = self.value_proj(value)
        if value_mask is not None:
            value = value * value_mask.astype(value.dtype).unsqueeze(-1)
        value = value.reshape(bs, len_v, self.num_heads, self.head_dim)

        sampling_offsets = self.sampling_offsets(query).reshape(
            bs, len_q, self.num_heads, self.num_levels, self.num_points, 2)
        attention_weights = self.attention_weights(query).reshape(
            bs, len_q, self.num_heads, self.num_levels * self.num_points)
        attention_weights = compat.softmax(attention_weights).reshape(
            bs, len_q, self.num_heads, self.num_levels, self.num_points)

        if reference_points.shape[-1] == 2:
            offset_normalizer = jt.array(np.asarray(value_spatial_shapes, dtype=np.float32))
            offset_normalizer = offset_normalizer.flip(1).reshape(1, 1, 1, self.num_levels, 1, 2)
            sampling_locations = reference_points.reshape(
                bs, len_q, 1, self.num_levels, 1, 2) + sampling_offsets / offset_normalizer
        elif reference_points.shape[-1] == 4:
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / self.num_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(
                f"Last dim of reference_points must be 2 or 4, but get {reference_points.shape[-1]} instead.")

        output = self.ms_deformable_attn_core(value, value_spatial_shapes, sampling_locations, attention_weights)

        output = self.output_proj(output)

        return output


class TransformerDecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention and FFN, each post-norm."""

    def __init__(self, d_model=256, n_head=8, dim_feedforward=1024, dropout=0., activation="relu",
                 n_levels=4, n_points=4):
        super().__init__()

        # self attention
        self.self_attn = compat.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout, is_train=True)
        self.norm1 = compat.LayerNorm(d_model)

        # cross attention
        self.cross_attn = MSDeformableAttention(d_model, n_head, n_levels, n_points)
        self.dropout2 = nn.Dropout(dropout, is_train=True)
        self.norm2 = compat.LayerNorm(d_model)

        # ffn
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = getattr(nn, activation)
        self.dropout3 = nn.Dropout(dropout, is_train=True)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout, is_train=True)
        self.norm3 = compat.LayerNorm(d_model)

    def with_pos_embed(self, tensor, pos):
        return tensor if pos is None else tensor + pos

    def forward_ffn(self, tgt):
        return self.linear2(self.dropout3(self.activation(self.linear1(tgt))))

    def execute(self, tgt, reference_points, memory, memory_spatial_shapes, memory_level_start_index,
                attn_mask=None, memory_mask=None, query_pos_embed=None):
        # self attention
        q = k = self.with_pos_embed(tgt, query_pos_embed)

        tgt2, _ = self.self_attn(q, k, value=tgt, attn_mask=attn_mask)
        tgt = tgt + self.dropout1(tgt2)
        tgt = self.norm1(tgt)

        # cross attention
        tgt2 = self.cross_attn(
            self.with_pos_embed(tgt, query_pos_embed),
            reference_points,
            memory,
            memory_spatial_shapes,
            memory_mask)
        tgt = tgt + self.dropout2(tgt2)
        tgt = self.norm2(tgt)

        # ffn
        tgt2 = self.forward_ffn(tgt)
        tgt = tgt + self.dropout4(tgt2)
        tgt = self.norm3(tgt)

        return tgt


class TransformerDecoder(nn.Module):
    """``num_layers`` copies of ``decoder_layer`` with iterative box refinement.

    Training returns every layer's boxes and logits; eval computes the layers up to
    ``eval_idx`` and returns that layer's only. Layer i > 0's training boxes are
    refined from the previous layer's non-detached boxes."""

    def __init__(self, hidden_dim, decoder_layer, num_layers, eval_idx=-1):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx

    def execute(self, tgt, ref_points_unact, memory, memory_spatial_shapes, memory_level_start_index,
                bbox_head, score_head, query_pos_head, attn_mask=None, memory_mask=None):
        output = tgt
        dec_out_bboxes = []
        dec_out_logits = []
        ref_points_detach = compat.sigmoid(ref_points_unact)

        for i, layer in enumerate(self.layers):
            ref_points_input = ref_points_detach.unsqueeze(2)
            query_pos_embed = query_pos_head(ref_points_detach)

            output = layer(output, ref_points_input, memory, memory_spatial_shapes, memory_level_start_index,
                           attn_mask, memory_mask, query_pos_embed)

            inter_ref_bbox = compat.sigmoid(bbox_head[i](output) + inverse_sigmoid(ref_points_detach))

            if self.training:
                dec_out_logits.append(score_head[i](output))
                if i == 0:
                    dec_out_bboxes.append(inter_ref_bbox)
                else:
                    dec_out_bboxes.append(compat.sigmoid(bbox_head[i](output) + inverse_sigmoid(ref_points)))
                probes.record(f"decoder.layer{i}.boxes", dec_out_bboxes[-1])
                probes.record(f"decoder.layer{i}.logits", dec_out_logits[-1])

            elif i == self.eval_idx:
                dec_out_logits.append(score_head[i](output))
                dec_out_bboxes.append(inter_ref_bbox)
                probes.record(f"decoder.layer{i}.boxes", dec_out_bboxes[-1])
                probes.record(f"decoder.layer{i}.logits", dec_out_logits[-1])
                break

            ref_points = inter_ref_bbox
            ref_points_detach = compat.detach(inter_ref_bbox) if self.training else inter_ref_bbox

        return jt.stack(dec_out_bboxes), jt.stack(dec_out_logits)


class RTDETRTransformer(nn.Module):
    """The RT-DETR decoder: ``execute(feats, targets=None)`` -> dict of predictions.

    ``denoising_noise``: the noise source for contrastive denoising (None: Jittor's
    global RNG)."""

    def __init__(self,
                 num_classes=80,
                 hidden_dim=256,
                 num_queries=300,
                 position_embed_type="sine",
                 feat_channels=[512, 1024, 2048],
                 feat_strides=[8, 16, 32],
                 num_levels=3,
                 num_decoder_points=4,
                 nhead=8,
                 num_decoder_layers=6,
                 dim_feedforward=1024,
                 dropout=0.,
                 activation="relu",
                 num_denoising=100,
                 label_noise_ratio=0.5,
                 box_noise_scale=1.0,
                 learnt_init_query=False,
                 eval_spatial_size=None,
                 eval_idx=-1,
                 eps=1e-2,
                 aux_loss=True):
        super().__init__()
        assert position_embed_type in ["sine", "learned"], \
            f"ValueError: position_embed_type not supported {position_embed_type}!"
        assert len(feat_channels) <= num_levels
        assert len(feat_strides) == len(feat_channels)
        feat_strides = list(feat_strides)
        for _ in range(num_levels - len(feat_strides)):
            feat_strides.append(feat_strides[-1] * 2)

        self.hidden_dim = hidden_dim
        self.nhead = nhead
        self.feat_strides = feat_strides
        self.num_levels = num_levels
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.eps = eps
        self.num_decoder_layers = num_decoder_layers
        self.eval_spatial_size = eval_spatial_size
        self.aux_loss = aux_loss

        # backbone feature projection
        self._build_input_proj_layer(feat_channels)

        # Transformer module
        decoder_layer = TransformerDecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, activation,
                                                num_levels, num_decoder_points)
        self.decoder = TransformerDecoder(hidden_dim, decoder_layer, num_decoder_layers, eval_idx)

        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.denoising_noise = None
        # denoising part
        if num_denoising > 0:
            self.denoising_class_embed = compat.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)

        # decoder embedding
        self.learnt_init_query = learnt_init_query
        if learnt_init_query:
            self.tgt_embed = compat.Embedding(num_queries, hidden_dim)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, num_layers=2)

        # encoder head
        self.enc_output = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            compat.LayerNorm(hidden_dim),
        )
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)

        # decoder head
        self.dec_score_head = nn.ModuleList([
            nn.Linear(hidden_dim, num_classes)
            for _ in range(num_decoder_layers)
        ])
        self.dec_bbox_head = nn.ModuleList([
            MLP(hidden_dim, hidden_dim, 4, num_layers=3)
            for _ in range(num_decoder_layers)
        ])

        # init encoder output anchors and valid_mask (private: out of the state_dict and of training)
        if self.eval_spatial_size:
            self._anchors, self._valid_mask = self._generate_anchors()

        self._reset_parameters()

    def _reset_parameters(self):
        bias = bias_init_with_prob(0.01)

        init.constant_(self.enc_score_head.bias, bias)
        init.constant_(self.enc_bbox_head.layers[-1].weight, 0)
        init.constant_(self.enc_bbox_head.layers[-1].bias, 0)

        for cls_, reg_ in zip(self.dec_score_head, self.dec_bbox_head):
            init.constant_(cls_.bias, bias)
            init.constant_(reg_.layers[-1].weight, 0)
            init.constant_(reg_.layers[-1].bias, 0)

        init.xavier_uniform_(self.enc_output[0].weight)
        if self.learnt_init_query:
            init.xavier_uniform_(self.tgt_embed.weight)
        init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        init.xavier_uniform_(self.query_pos_head.layers[1].weight)

    def _build_input_proj_layer(self, feat_channels):
        self.input_proj = nn.ModuleList()
        for in_channels in feat_channels:
            self.input_proj.append(
                nn.Sequential(OrderedDict([
                    ("conv", compat.Conv2d(in_channels, self.hidden_dim, 1, bias=False)),
                    ("norm", compat.BatchNorm2d(self.hidden_dim))]))
            )

        in_channels = feat_channels[-1]

        for _ in range(self.num_levels - len(feat_channels)):
            self.input_proj.append(
                nn.Sequential(OrderedDict([
                    ("conv", compat.Conv2d(in_channels, self.hidden_dim, 3, 2, padding=1, bias=False)),
                    ("norm", compat.BatchNorm2d(self.hidden_dim))]))
            )
            in_channels = self.hidden_dim

    def _get_encoder_input(self, feats):
        # get projection features
        proj_feats = [self.input_proj[i](feat) for i, feat in enumerate(feats)]
        if self.num_levels > len(proj_feats):
            len_srcs = len(proj_feats)
            for i in range(len_srcs, self.num_levels):
                if i == len_srcs:
                    proj_feats.append(self.input_proj[i](feats[-1]))
                else:
                    proj_feats.append(self.input_proj[i](proj_feats[-1]))

        # get encoder inputs
        feat_flatten = []
        spatial_shapes = []
        level_start_index = [0]
        for i, feat in enumerate(proj_feats):
            b, c, h, w = feat.shape
            # [b, c, h, w] -> [b, h*w, c]
            feat_flatten.append(feat.transpose(0, 2, 3, 1).reshape(b, h * w, c))
            # [num_levels, 2]
            spatial_shapes.append([h, w])
            # [l], start index of each level
            level_start_index.append(h * w + level_start_index[-1])

        # [b, l, c]
        feat_flatten = jt.concat(feat_flatten, 1)
        level_start_index.pop()
        return feat_flatten, spatial_shapes, level_start_index

    def _eval_spatial_shapes(self):
        """The per-level feature shapes implied by ``eval_spatial_size``."""
        return [[int(self.eval_spatial_size[0] / s), int(self.eval_spatial_size[1] / s)]
                for s in self.feat_strides]

    def _generate_anchors(self, spatial_shapes=None, grid_size=0.05, dtype="float32"):
        if spatial_shapes is None:
            spatial_shapes = self._eval_spatial_shapes()
        anchors = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            grid_y, grid_x = jt.meshgrid(
                jt.arange(end=h, dtype=dtype),
                jt.arange(end=w, dtype=dtype))
            grid_xy = jt.stack([grid_x, grid_y], -1)
            valid_wh = jt.array(np.array([w, h], dtype=np.float32)).astype(dtype)
            grid_xy = (grid_xy.unsqueeze(0) + 0.5) / valid_wh
            wh = jt.ones_like(grid_xy) * grid_size * (2.0 ** lvl)
            anchors.append(jt.concat([grid_xy, wh], -1).reshape(-1, h * w, 4))

        anchors = jt.concat(anchors, 1)
        valid_mask = ((anchors > self.eps) & (anchors < 1 - self.eps)).all(-1).unsqueeze(-1)
        anchors = jt.log(anchors / (1 - anchors))
        anchors = jt.where(valid_mask.broadcast(anchors.shape), anchors, jt.full_like(anchors, float("inf")))

        return anchors.stop_grad(), valid_mask.stop_grad()

    def _get_decoder_input(self, memory, spatial_shapes, denoising_class=None, denoising_bbox_unact=None):
        bs, _, _ = memory.shape
        # prepare input for decoder
        if self.training or self.eval_spatial_size is None \
                or [list(s) for s in spatial_shapes] != self._eval_spatial_shapes():
            anchors, valid_mask = self._generate_anchors(spatial_shapes)
        else:
            anchors, valid_mask = self._anchors, self._valid_mask
        anchors = probes.decide("decoder.anchors", anchors)
        probes.record("decoder.valid_mask", valid_mask)

        memory = valid_mask.astype(memory.dtype) * memory

        output_memory = self.enc_output(memory)

        enc_outputs_class = self.enc_score_head(output_memory)
        enc_outputs_coord_unact = self.enc_bbox_head(output_memory) + anchors
        probes.record("decoder.enc_outputs_class", enc_outputs_class)
        probes.record("decoder.enc_outputs_coord_unact", enc_outputs_coord_unact)

        _, topk_ind = compat.topk(compat.max_values(enc_outputs_class, -1), self.num_queries, dim=1)
        topk_ind = probes.decide("decoder.topk_ind", topk_ind)
        if not isinstance(topk_ind, jt.Var):
            topk_ind = jt.array(compat.to_numpy(topk_ind).astype(np.int64))
        topk_ind = compat.detach(topk_ind).int64()

        reference_points_unact = enc_outputs_coord_unact.gather(
            dim=1, index=topk_ind.unsqueeze(-1).repeat(1, 1, enc_outputs_coord_unact.shape[-1]))

        enc_topk_bboxes = compat.sigmoid(reference_points_unact)
        if denoising_bbox_unact is not None:
            reference_points_unact = jt.concat([denoising_bbox_unact, reference_points_unact], 1)

        enc_topk_logits = enc_outputs_class.gather(
            dim=1, index=topk_ind.unsqueeze(-1).repeat(1, 1, enc_outputs_class.shape[-1]))
        probes.record("decoder.enc_topk_bboxes", enc_topk_bboxes)
        probes.record("decoder.enc_topk_logits", enc_topk_logits)

        # extract region features
        if self.learnt_init_query:
            target = self.tgt_embed.weight.unsqueeze(0).repeat(bs, 1, 1)
        else:
            target = output_memory.gather(
                dim=1, index=topk_ind.unsqueeze(-1).repeat(1, 1, output_memory.shape[-1]))
            target = compat.detach(target)

        if denoising_class is not None:
            target = jt.concat([denoising_class, target], 1)

        return target, compat.detach(reference_points_unact), enc_topk_bboxes, enc_topk_logits

    def execute(self, feats, targets=None):
        # input projection and embedding
        memory, spatial_shapes, level_start_index = self._get_encoder_input(feats)

        # prepare denoising training
        if self.training and self.num_denoising > 0:
            denoising_class, denoising_bbox_unact, attn_mask, dn_meta = \
                get_contrastive_denoising_training_group(targets,
                                                         self.num_classes,
                                                         self.num_queries,
                                                         self.denoising_class_embed,
                                                         num_denoising=self.num_denoising,
                                                         label_noise_ratio=self.label_noise_ratio,
                                                         box_noise_scale=self.box_noise_scale,
                                                         noise=self.denoising_noise)
        else:
            denoising_class, denoising_bbox_unact, attn_mask, dn_meta = None, None, None, None

        target, init_ref_points_unact, enc_topk_bboxes, enc_topk_logits = \
            self._get_decoder_input(memory, spatial_shapes, denoising_class, denoising_bbox_unact)

        # decoder
        out_bboxes, out_logits = self.decoder(
            target,
            init_ref_points_unact,
            memory,
            spatial_shapes,
            level_start_index,
            self.dec_bbox_head,
            self.dec_score_head,
            self.query_pos_head,
            attn_mask=attn_mask)

        if self.training and dn_meta is not None:
            dn_out_bboxes, out_bboxes = jt.split(out_bboxes, dn_meta["dn_num_split"], dim=2)
            dn_out_logits, out_logits = jt.split(out_logits, dn_meta["dn_num_split"], dim=2)

        out = {"pred_logits": out_logits[-1], "pred_boxes": out_bboxes[-1]}

        if self.training and self.aux_loss:
            out["aux_outputs"] = self._set_aux_loss(out_logits[:-1], out_bboxes[:-1])
            out["aux_outputs"].extend(self._set_aux_loss([enc_topk_logits], [enc_topk_bboxes]))

            if self.training and dn_meta is not None:
                out["dn_aux_outputs"] = self._set_aux_loss(dn_out_logits, dn_out_bboxes)
                out["dn_meta"] = dn_meta

        return out

    def _set_aux_loss(self, outputs_class, outputs_coord):
        return [{"pred_logits": outputs_class[i], "pred_boxes": outputs_coord[i]}
                for i in range(len(outputs_class))]
