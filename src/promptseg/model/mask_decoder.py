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
    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
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

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        prepared: PreparedImage | None = None,
        min_iou: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M), M = 3 or 1.

        `prepared` (from `prepare_image`) replaces the image-side work when the dense prompt is
        the no-mask embedding, which every such prompt shares. With `min_iou`, a prompt none of
        whose masks predicts an IoU above it is not brought to mask size: its logits are NaN."""
        outputs = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, prepared, outputs, min_iou
        )

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask tokens' logits (B, M, 4h, 4w) and IoU predictions (B, M): all four, or
        those `outputs` picks (only they are brought to mask size); `min_iou` as in `forward`."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 or {b} (one per prompt)"
            )
        # The answer reads the IoU token and the picked mask tokens only. Under autograd every
        # mask head still runs, so the others get zero gradients (not none), as an optimiser
        # applying weight decay expects.
        every = list(range(self.num_mask_tokens))
        picked = every if torch.is_grad_enabled() else every[outputs]
        final = [0] + [1 + i for i in picked]
        if prepared is not None:
            hs, src = self.transformer(None, None, tokens, prepared, final)
        else:
            dense = dense_prompt_embeddings
            if dense.shape[0] == b and b > 1 and dense.stride(0) == 0:
                dense = dense[:1]  # the same no-mask embedding for every prompt: keep it shared
            hs, src = self.transformer(image_embeddings + dense, image_pe, tokens, None, final)
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](hs[:, 1 + j, :]) for j, i in enumerate(picked)], dim=1
        )
        h, w = image_embeddings.shape[2], image_embeddings.shape[3]
        iou = self.iou_prediction_head(hs[:, 0, :])[:, outputs]
        if len(picked) > iou.shape[1]:
            hyper_in = hyper_in[:, outputs]
        if min_iou is None:
            return self._upscale_masks(src, hyper_in, h, w), iou
        # The IoU head reads the tokens only: prompts whose masks would all be dropped by the
        # caller's IoU filter skip the upscaling, the larger part of the decoder's work.
        wanted = (iou > min_iou).any(dim=1)
        masks = src.new_full((b, hyper_in.shape[1], 4 * h, 4 * w), float("nan"))
        if wanted.any():
            idx = wanted.nonzero()[:, 0]
            masks[idx] = self._upscale_masks(src[idx], hyper_in[idx], h, w)
        return masks, iou

    def _upscale_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Image tokens (B, h*w, C) and per-mask weights (B, M, C/8) -> mask logits (B, M, 4h, 4w).

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
            return self._upscale_whole(src, hyper_in, h, w)
        return self._upscale_bands(src, hyper_in, h, w)

    def _upscale_whole(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """`_upscale_masks` on the whole image at once."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, m = src.shape[0], hyper_in.shape[1]
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, -1)  # (C, 2*2*C/4)
        x = torch.addmm(up1.bias.repeat(4), src.reshape(-1, src.shape[-1]), w1)
        x = act1(F.layer_norm(x.view(b, h * w * 4, -1), (up1.out_channels,), norm.weight, norm.bias, norm.eps))
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(up2.in_channels, -1)  # (C/4, 2*2*C/8)
        x = act2(torch.addmm(up2.bias.repeat(4), x.view(-1, x.shape[-1]), w2).view(b, h * w * 16, -1))
        masks = x @ hyper_in.transpose(1, 2)  # (B, pixels in token order, M)
        # token order is (i, j, di, dj, ei, ej); image row = 4i + 2di + ei, column = 4j + 2dj + ej
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, 4 * h, 4 * w)

    def _upscale_bands(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
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
        for i in range(b):
            hyper = hyper_in[i]  # (M, C/8)
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                band = src[i, r0 * w : r1 * w]  # (n, C), tokens in image order
                for di in (0, 1):
                    x = torch.addmm(b1, band, w1[di]).view(-1, c1)  # rows (token, dj)
                    x = _activate_(act1, F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
                    for ei in (0, 1):
                        y = _activate_(act2, torch.addmm(b2, x, w2[ei]).view(-1, c2))  # rows (token, dj, ej)
                        logits = (hyper @ y.t()).view(m, r1 - r0, 4 * w)  # image rows 4r + 2di + ei
                        out[i, :, 4 * r0 + 2 * di + ei : 4 * r1 : 4] = logits
        return out


_BAND_TOKENS = 4096  # tokens upscaled at once without autograd: SAM's whole 64x64 grid


def _activate_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """act(x), in place for GELU (no autograd: its input is not kept)."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)
