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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M), M = 3 or 1.

        `prepared` (from `prepare_image`) replaces the image-side work when the dense prompt is
        the no-mask embedding, which every such prompt shares."""
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, prepared
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' logits (B, 4, 4h, 4w) and IoU predictions (B, 4)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 or {b} (one per prompt)"
            )
        if prepared is not None:
            hs, src = self.transformer(None, None, tokens, prepared)
        else:
            dense = dense_prompt_embeddings
            if dense.shape[0] == b and b > 1 and dense.stride(0) == 0:
                dense = dense[:1]  # the same no-mask embedding for every prompt: keep it shared
            hs, src = self.transformer(image_embeddings + dense, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        h, w = image_embeddings.shape[2], image_embeddings.shape[3]
        return self._upscale_masks(src, hyper_in, h, w), self.iou_prediction_head(iou_token_out)

    def _upscale_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Image tokens (B, h*w, C) and per-mask weights (B, M, C/8) -> mask logits (B, M, 4h, 4w).

        Each stride-2, 2x2 transposed convolution maps one pixel to its own 2x2 block, so it is
        a matrix product per pixel. Pixels stay in token order (sub-pixel offsets as extra axes)
        through both upscalings, the norm, the activations and the per-mask dot products; only
        the final (B, M, 4h, 4w) logits are rearranged into image order.
        """
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
