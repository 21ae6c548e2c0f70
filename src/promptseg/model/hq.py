"""HQ-SAM: SAM with one more output token whose mask reads finer image features.

The image side adds HQ features (C/8, 4h, 4w), made once per image from the embedding and from
the encoder's early tokens (after its first global-attention block; TinyViT: after its second
stage). The decoder adds the HQ token: its mask is read from the SAM upscaled embedding passed
through two 3x3 convolutions plus the HQ features. Every prompt gets one mask: the SAM mask
(the single-mask token's, or with `multimask_output` the candidate with the highest predicted
IoU) plus the HQ mask, or with `hq_token_only` the HQ mask alone; its score is that SAM mask's
predicted IoU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d
from .fast_attention import PreparedImage
from .mask_decoder import MaskDecoder
from .sam import Sam
from .transformer import TwoWayTransformer

_HQ_CHUNK = 4  # prompts brought to mask size together without autograd (each holds ~24 MB of features)


class MaskDecoderHQ(MaskDecoder):
    hq = True

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer, vit_dim: int, **kwargs) -> None:
        """SAM's decoder plus the HQ token and its parts; `vit_dim` is the width of the encoder's
        early tokens."""
        super().__init__(transformer_dim, transformer, **kwargs)
        d = transformer_dim
        self.hf_token = nn.Embedding(1, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, d, kernel_size=2, stride=2), LayerNorm2d(d), nn.GELU(),
            nn.ConvTranspose2d(d, d // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2), LayerNorm2d(d // 4), nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1), LayerNorm2d(d // 4), nn.GELU(), nn.Conv2d(d // 4, d // 8, 3, 1, 1),
        )

    def hq_features(self, image_embeddings: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """The prompt-independent HQ features (B, C/8, 4h, 4w) from the embedding (B, C, h, w)
        and the encoder's early tokens (B, h, w, vit_dim)."""
        early = early.permute(0, 3, 1, 2)  # channels last in memory
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
            return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early)
        embedding = image_embeddings.contiguous(memory_format=torch.channels_last)
        return _channels_last(self.embedding_encoder, embedding) + _channels_last(self.compress_vit_feat, early)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        prepared: PreparedImage | None = None,
        min_iou: float | None = None,
        high_res: tuple[torch.Tensor] | None = None,
        object_scores: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """One mask per prompt: low-res logits (B, 1, 4h, 4w) and the score (B, 1) (see the
        module's notes); `high_res` is `(hq_features,)`, batch 1 or B. With `min_iou`, a
        prompt whose score is not above it is not brought to mask size (NaN logits)."""
        feats = _hq_level(high_res)
        hs, src = self._tokens(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, prepared)
        b = hs.shape[0]
        rows = torch.arange(b, device=hs.device)
        iou_all = self.iou_prediction_head(hs[:, 0])
        if multimask_output:
            pick = iou_all[:, 1:].argmax(dim=1) + 1
        else:
            pick = torch.zeros(b, dtype=torch.long, device=hs.device)
        iou = iou_all[rows, pick][:, None]
        hyper = self._hypers(hs)  # (B, 5, C/8): the four SAM tokens', then the HQ token's
        # the HQ token's weights alone, or the picked SAM token's then the HQ token's (added)
        pair = hyper[:, -1:] if hq_token_only else torch.stack([hyper[rows, pick], hyper[:, -1]], dim=1)
        h, w = image_embeddings.shape[-2:]
        obj = iou.new_full((b, 1), 10.0)
        if min_iou is None:
            masks = self._masks(src, pair, h, w, feats, combine=not hq_token_only)
        else:
            masks = src.new_full((b, 1, 4 * h, 4 * w), float("nan"))
            wanted = (iou[:, 0] > min_iou).nonzero()[:, 0]
            if len(wanted):
                level = feats if feats.shape[0] == 1 else feats[wanted]
                masks[wanted] = self._masks(src[wanted], pair[wanted], h, w, level, combine=not hq_token_only)
        return (masks, iou, obj) if object_scores else (masks, iou)

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                      prepared=None, outputs=slice(None), min_iou=None, high_res=None, object_scores=False):
        """Every token's logits (B, 5, 4h, 4w): the four SAM tokens', then the HQ token's alone
        (an answer is one SAM token's plus it), and the SAM tokens' IoU predictions (B, 4)."""
        feats = _hq_level(high_res)
        hs, src = self._tokens(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, prepared)
        masks = self._masks(src, self._hypers(hs), image_embeddings.shape[-2], image_embeddings.shape[-1], feats,
                            combine=False)
        iou = self.iou_prediction_head(hs[:, 0])
        return (masks, iou, iou.new_full((iou.shape[0], 1), 10.0)) if object_scores else (masks, iou)

    def _tokens(self, image_embeddings, image_pe, sparse, dense, prepared):
        """The transformer's output tokens (B, 6, C: IoU, four mask tokens, HQ) and image tokens."""
        b = sparse.shape[0]
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 or {b} (one per prompt)"
            )
        out = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        tokens = torch.cat([out.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        return self._run_transformer(image_embeddings, image_pe, tokens, dense, prepared, list(range(len(out))))

    def _hypers(self, hs: torch.Tensor) -> torch.Tensor:
        heads = [*self.output_hypernetworks_mlps, self.hf_mlp]
        return torch.stack([head(hs[:, 1 + i]) for i, head in enumerate(heads)], dim=1)

    def _masks(self, src: torch.Tensor, hyper: torch.Tensor, h: int, w: int, feats: torch.Tensor,
               combine: bool) -> torch.Tensor:
        """Image tokens (B, h*w, C) and mask weights (B, K, C/8) whose last row is the HQ token's
        -> logits (B, K, 4h, 4w); with `combine` (K = 2), the SAM mask plus the HQ mask (B, 1, ...).
        A few prompts at a time without autograd (the 3x3 convolutions' features are large)."""
        b = src.shape[0]
        plain = torch.is_grad_enabled() or torch.onnx.is_in_onnx_export()
        step = b if plain else _HQ_CHUNK
        parts = []
        for i in range(0, b, step):
            n = min(step, b - i)
            level = feats if feats.shape[0] == 1 else feats[i : i + n]
            weights = hyper[i : i + n]
            if plain:
                emb = self.output_upscaling(src[i : i + n].transpose(1, 2).reshape(n, -1, h, w))  # (n, C/8, 4h, 4w)
                fine = self.embedding_maskfeature(emb) + level
            else:  # channels last: the 3x3 convolutions and the norms run several times faster
                tokens = self.upscaled_tokens(src[i : i + n], h, w)  # (n, 16hw, C/8), token order
                emb = tokens.view(n, h, w, 2, 2, 2, 2, -1).permute(0, 1, 3, 5, 2, 4, 6, 7)
                emb = emb.reshape(n, 4 * h, 4 * w, -1).permute(0, 3, 1, 2)  # channels last
                fine = _channels_last(self.embedding_maskfeature, emb).add_(level)
            # per-mask dot products over channels, read in the features' own memory layout
            hq = torch.einsum("nchw,nc->nhw", fine, weights[:, -1]).unsqueeze(1)
            if combine:
                logits = torch.einsum("nchw,nc->nhw", emb, weights[:, 0]).unsqueeze(1) + hq
            else:  # the SAM tokens' masks (none for the HQ token alone), then the HQ mask
                logits = torch.cat([torch.einsum("nchw,nkc->nkhw", emb, weights[:, :-1]), hq], dim=1)
            parts.append(logits.contiguous())
        return torch.cat(parts)


def _channels_last(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`seq` on a channels-last `x` without autograd, its LayerNorm2d as a layer norm over each
    pixel's channels (contiguous in this layout)."""
    for module in seq:
        if isinstance(module, LayerNorm2d):
            x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), module.weight, module.bias,
                             module.eps).permute(0, 3, 1, 2)
        else:
            x = module(x)
    return x


def _hq_level(high_res) -> torch.Tensor:
    if high_res is None or len(high_res) != 1:
        raise ValueError("HQ-SAM's decoder needs the image's HQ features, high_res=(hq_features,) from SamHQ.encode")
    return high_res[0]


class SamHQ(Sam):
    """HQ-SAM: SAM with `MaskDecoderHQ`; `encode` also makes the image's HQ features."""

    hq = True

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        """The embedding (B, C, h, w) and `(hq_features,)` (B, C/8, 4h, 4w)."""
        embedding, early = self.image_encoder.forward_with_early(x)
        # channels last, the layout the decoder's features are in when it adds these
        hq = self.mask_decoder.hq_features(embedding, early).contiguous(memory_format=torch.channels_last)
        return embedding, (hq,)
