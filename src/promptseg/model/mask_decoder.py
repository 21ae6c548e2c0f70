"""Mask decoder: a two-way transformer between prompt tokens and image tokens
(`transformer.TwoWayTransformer`), then hypernetwork heads that turn output tokens into mask
logits, and an IoU prediction head.

An image embedding of batch 1 is broadcast against a batch of B prompts rather than copied:
image-side work that does not depend on the prompt is done once for all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d
from .fast_attention import PreparedImage
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    hq = False  # HQ-SAM's decoder (`promptseg.model.hq.MaskDecoderHQ`) has an HQ token
    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        pred_obj_scores: bool = False,
        iou_sigmoid: bool = False,
        dynamic_multimask: tuple[float, float] | None = None,
    ) -> None:
        """SAM's decoder by default. SAM 2's adds: `use_high_res_features` (the encoder's 4x and
        8x levels, through `conv_s0`/`conv_s1`, join the two upscaling steps), `pred_obj_scores`
        (an object-score token and head), `iou_sigmoid` (IoU predictions through a sigmoid) and
        `dynamic_multimask` = (delta, threshold): asked for one mask, a prompt whose single-mask
        logits are unstable (the area above +delta over the area above -delta is below the
        threshold) gets the multimask candidate with the highest predicted IoU instead."""
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        self.use_high_res_features = use_high_res_features
        self.pred_obj_scores = pred_obj_scores
        self.iou_sigmoid = iou_sigmoid
        self.dynamic_multimask = dynamic_multimask
        if use_high_res_features:  # applied by the model when it embeds an image
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
            self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        prepared: PreparedImage | None = None,
        min_iou: float | None = None,
        high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
        object_scores: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Returns low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M), M = 3 or 1;
        with `object_scores`, also the object-score logits (B, 1) (10 for a model without them).

        `prepared` (from `prepare_image`) replaces the image-side work when the dense prompt is
        the no-mask embedding, which every such prompt shares. With `min_iou`, a prompt none of
        whose masks predicts an IoU above it is not brought to mask size: its logits are NaN.
        `high_res` are SAM 2's (4x, 8x) feature levels after `conv_s0`/`conv_s1`, batch 1 or B.
        `hq_token_only` is HQ-SAM's option (`promptseg.model.hq`); this decoder has no HQ token."""
        if hq_token_only:
            raise ValueError("hq_token_only applies to HQ-SAM models (vit_b_hq, vit_l_hq, vit_h_hq, vit_tiny_hq)")
        if multimask_output:
            outputs = slice(1, None)
        elif self.dynamic_multimask is not None and not self.training:
            outputs = "dynamic"
        else:
            outputs = slice(0, 1)
        masks, iou, obj = self._predict(image_embeddings, image_pe, sparse_prompt_embeddings,
                                        dense_prompt_embeddings, prepared, outputs, min_iou, high_res)
        return (masks, iou, obj) if object_scores else (masks, iou)

    def prepare_image(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, no_mask_dense: torch.Tensor):
        """Prompt-independent decoder work for one image embedding (1, C, h, w), for prompts
        without a mask input (whose dense embedding `no_mask_dense` they all share)."""
        if image_embeddings.shape[0] != 1:
            raise ValueError("prepare_image takes one image embedding (batch 1)")
        return self.transformer.prepare_image(image_embeddings + no_mask_dense[:1], image_pe)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        prepared: PreparedImage | None = None,
        outputs: slice = slice(None),
        min_iou: float | None = None,
        high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
        object_scores: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """The mask tokens' logits (B, M, 4h, 4w) and IoU predictions (B, M): all four, or
        those `outputs` picks (only they are brought to mask size); the rest as in `forward`."""
        masks, iou, obj = self._predict(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                        prepared, outputs, min_iou, high_res)
        return (masks, iou, obj) if object_scores else (masks, iou)

    def _predict(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, prepared,
                 outputs, min_iou, high_res) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, IoU and object-score logits; `outputs` a slice of the mask tokens or "dynamic"."""
        b = sparse_prompt_embeddings.shape[0]
        first = [self.obj_score_token.weight] if self.pred_obj_scores else []
        s = len(first)  # the IoU token's place; the mask tokens follow it
        output_tokens = torch.cat([*first, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 or {b} (one per prompt)"
            )
        dynamic = outputs == "dynamic"
        # The answer reads the IoU token and the picked mask tokens only. Under autograd every
        # mask head still runs, so the others get zero gradients (not none), as an optimiser
        # applying weight decay expects.
        every = list(range(self.num_mask_tokens))
        picked = every if torch.is_grad_enabled() or dynamic else every[outputs]
        final = list(range(s + 1)) + [s + 1 + i for i in picked]
        hs, src = self._run_transformer(image_embeddings, image_pe, tokens, dense_prompt_embeddings, prepared, final)
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](hs[:, s + 1 + j, :]) for j, i in enumerate(picked)], dim=1
        )
        h, w = image_embeddings.shape[2], image_embeddings.shape[3]
        iou = self.iou_prediction_head(hs[:, s, :])
        if self.iou_sigmoid:
            iou = torch.sigmoid(iou)
        if self.pred_obj_scores:
            obj = self.pred_obj_score_head(hs[:, 0, :])
        else:
            obj = iou.new_full((b, 1), 10.0)  # an object is always there
        if dynamic:
            return (*self._dynamic_single_mask(src, hyper_in, iou, h, w, high_res), obj)
        iou = iou[:, outputs]
        if len(picked) > iou.shape[1]:
            hyper_in = hyper_in[:, outputs]
        if min_iou is None:
            return self._upscale_masks(src, hyper_in, h, w, high_res), iou, obj
        # The IoU head reads the tokens only: prompts whose masks would all be dropped by the
        # caller's IoU filter skip the upscaling, the larger part of the decoder's work.
        wanted = (iou > min_iou).any(dim=1)
        masks = src.new_full((b, hyper_in.shape[1], 4 * h, 4 * w), float("nan"))
        if wanted.any():
            idx = wanted.nonzero()[:, 0]
            masks[idx] = self._upscale_masks(src[idx], hyper_in[idx], h, w, _rows(high_res, idx))
        return masks, iou, obj

    def _run_transformer(self, image_embeddings, image_pe, tokens, dense, prepared, final):
        """The two-way transformer on prompt `tokens` (B, T, C): the tokens `final` picks and the
        image tokens (B, h*w, C)."""
        if prepared is not None:
            return self.transformer(None, None, tokens, prepared, final)
        b = tokens.shape[0]
        if dense.shape[0] == b and b > 1 and dense.stride(0) == 0:
            dense = dense[:1]  # the same no-mask embedding for every prompt: keep it shared
        return self.transformer(image_embeddings + dense, image_pe, tokens, None, final)

    def _dynamic_single_mask(self, src, hyper_in, iou, h, w, high_res) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt: the single-mask token's where its logits are stable, else the
        multimask candidate with the highest predicted IoU (see `dynamic_multimask`). Only those
        two masks are brought to mask size."""
        delta, threshold = self.dynamic_multimask
        rows = torch.arange(iou.shape[0], device=iou.device)
        best = iou[:, 1:].argmax(dim=1) + 1
        pair = torch.stack([hyper_in[:, 0], hyper_in[rows, best]], dim=1)
        masks = self._upscale_masks(src, pair, h, w, high_res)
        return stable_or_fallback(masks[:, :1], masks[:, 1:], iou[:, :1], iou[rows, best][:, None], delta, threshold)

    def _upscale_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int,
                       high_res: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Image tokens (B, h*w, C) and per-mask weights (B, M, C/8) -> mask logits (B, M, 4h, 4w);
        SAM 2's `high_res` levels (B or 1, C/8, 4h, 4w) and (B or 1, C/4, 2h, 2w) are added
        after each transposed convolution.

        Each stride-2, 2x2 transposed convolution maps one pixel to its own 2x2 block, so it is
        a matrix product per pixel. Pixels stay in token order (sub-pixel offsets as extra axes)
        through both upscalings, the norm, the activations and the per-mask dot products; only
        the logits are rearranged into image order.

        Without autograd (and outside ONNX export) the work goes one prompt at a time (a band
        of token rows, for grids over `_BAND_TOKENS`) and one row offset of each 2x2 block at a
        time, so each step's intermediates (about 2 MB) stay in the CPU's cache: whole, they
        are 24 MB a prompt, and every elementwise pass over them would go to memory.
        """
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
            return self._upscale_whole(src, hyper_in, h, w, high_res)
        return self._upscale_bands(src, hyper_in, h, w, high_res)

    def _upscale_whole(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int,
                       high_res: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`_upscale_masks` on the whole image at once."""
        b, m = src.shape[0], hyper_in.shape[1]
        x = self.upscaled_tokens(src, h, w, high_res)
        masks = x @ hyper_in.transpose(1, 2)  # (B, pixels in token order, M)
        # token order is (i, j, di, dj, ei, ej); image row = 4i + 2di + ei, column = 4j + 2dj + ej
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, 4 * h, 4 * w)

    def upscaled_tokens(self, src: torch.Tensor, h: int, w: int,
                        high_res: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The upscaled embedding (B, 16hw, C/8) of image tokens (B, hw, C), its pixels in token
        order (i, j, di, dj, ei, ej): image row 4i + 2di + ei, column 4j + 2dj + ej."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        b = src.shape[0]
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, -1)  # (C, 2*2*C/4)
        x = torch.addmm(up1.bias.repeat(4), src.reshape(-1, src.shape[-1]), w1).view(b, h * w * 4, -1)
        if high_res is not None:  # the 8x level in token order (i, j, di, dj)
            s1 = high_res[1]
            x = x + s1.view(s1.shape[0], -1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(s1.shape[0], h * w * 4, -1)
        x = act1(F.layer_norm(x, (up1.out_channels,), norm.weight, norm.bias, norm.eps))
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(up2.in_channels, -1)  # (C/4, 2*2*C/8)
        x = torch.addmm(up2.bias.repeat(4), x.view(-1, x.shape[-1]), w2).view(b, h * w * 16, -1)
        if high_res is not None:  # the 4x level in token order (i, j, di, dj, ei, ej)
            s0 = high_res[0]
            s0 = s0.view(s0.shape[0], -1, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
            x = x + s0.reshape(s0.shape[0], h * w * 16, -1)
        return act2(x)

    def _upscale_bands(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int,
                       high_res: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`_upscale_masks` a band of token rows at a time, in place, for inference.

        Each transposed convolution is split by the row offset (di, then ei) of the 2x2 block
        it writes: for one offset, its output rows come out in image order along a row
        (token j, then dj, then ej), so the per-mask products land as whole image rows and no
        pixel is rearranged one by one. A band's intermediates (a few MB) stay in the cache."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, m = src.shape[0], hyper_in.shape[1]
        c1, c2 = up1.out_channels, up2.out_channels
        # weights (C_in, C_out, di, dj) -> per row offset di: (C_in, dj * C_out), columns (dj, c)
        w1 = [up1.weight[:, :, di].permute(0, 2, 1).reshape(up1.in_channels, -1) for di in (0, 1)]
        w2 = [up2.weight[:, :, ei].permute(0, 2, 1).reshape(up2.in_channels, -1) for ei in (0, 1)]
        b1, b2 = up1.bias.repeat(2), up2.bias.repeat(2)
        out = src.new_empty(b, m, 4 * h, 4 * w)
        rows = max(1, _BAND_TOKENS // w)
        if high_res is not None:  # channels last: image row r of a level is (columns, C), in the rows' order
            s0_all, s1_all = (f.permute(0, 2, 3, 1) for f in high_res)
        for i in range(b):
            hyper = hyper_in[i]  # (M, C/8)
            if high_res is not None:
                s0, s1 = s0_all[i if s0_all.shape[0] > 1 else 0], s1_all[i if s1_all.shape[0] > 1 else 0]
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                band = src[i, r0 * w : r1 * w]  # (n, C), tokens in image order
                for di in (0, 1):
                    x = torch.addmm(b1, band, w1[di]).view(-1, c1)  # rows (token, dj)
                    if high_res is not None:  # 8x-level rows 2r + di
                        x.view(r1 - r0, 2 * w, c1).add_(s1[2 * r0 + di : 2 * r1 : 2])
                    x = _activate_(act1, F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
                    for ei in (0, 1):
                        y = torch.addmm(b2, x, w2[ei]).view(-1, c2)  # rows (token, dj, ej)
                        if high_res is not None:  # 4x-level rows 4r + 2di + ei
                            y.view(r1 - r0, 4 * w, c2).add_(s0[4 * r0 + 2 * di + ei : 4 * r1 : 4])
                        y = _activate_(act2, y)
                        logits = (hyper @ y.t()).view(m, r1 - r0, 4 * w)  # image rows 4r + 2di + ei
                        out[i, :, 4 * r0 + 2 * di + ei : 4 * r1 : 4] = logits
        return out


_BAND_TOKENS = 4096  # tokens upscaled at once without autograd: SAM's whole 64x64 grid


def stable_or_fallback(single: torch.Tensor, fallback: torch.Tensor, single_iou: torch.Tensor,
                       fallback_iou: torch.Tensor, delta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's single-mask choice: per prompt, the single-mask logits (B, 1, h, w) and IoU (B, 1)
    where they are stable (the area above +delta over the area above -delta at least
    `threshold`), else the fallback's."""
    flat = single.flatten(1)
    inner = (flat > delta).sum(dim=1).float()
    outer = (flat > -delta).sum(dim=1).float()
    stable = torch.where(outer > 0, inner / outer.clamp(min=1.0), torch.ones_like(outer)) >= threshold
    return (torch.where(stable[:, None, None, None], single, fallback),
            torch.where(stable[:, None], single_iou, fallback_iou))


def _rows(high_res, idx: torch.Tensor):
    """The high-res levels of the prompts `idx` (levels of batch 1 are shared by every prompt)."""
    if high_res is None:
        return None
    return tuple(f if f.shape[0] == 1 else f[idx] for f in high_res)


def _activate_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """act(x), in place for GELU (no autograd: its input is not kept)."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)
