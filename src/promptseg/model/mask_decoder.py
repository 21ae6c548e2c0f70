"""Mask decoder: a two-way transformer between prompt tokens and image tokens, then
hypernetwork heads that turn output tokens into mask logits, and an IoU prediction head.

An image embedding of batch 1 is broadcast against a batch of B prompts rather than copied:
image-side work that does not depend on the prompt is done once for all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, LayerNorm2d, MLPBlock


class Attention(nn.Module):
    """Multi-head attention whose inner width may be downsampled; batch dims broadcast."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the inner width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of a few (already projected) queries over many raw keys and values.

        Instead of projecting every key and value, each head's query is carried back through
        the key projection (q_h . (W_h k + b_h) = (W_h^T q_h) . k + const, and a per-row constant
        does not change a softmax), and the value projection is applied after averaging
        (softmax weights sum to 1). Same result, a fraction of the work when heads x queries is
        smaller than the projected width."""
        b, heads, t, d = q.shape
        wk = self.k_proj.weight.view(heads, d, -1)  # (heads, d, C)
        wv = self.v_proj.weight.view(heads, d, -1)
        # Per-head products as einsums (one batched matmul over heads): a broadcast matmul
        # against the (heads, d, C) weights materialises B copies of them in the backward pass,
        # which cost ~15 % of a training step. ONNX export keeps the MatMul form, which ONNX
        # Runtime (web included) runs at least as fast as an Einsum.
        onnx = torch.onnx.is_in_onnx_export()
        q_in = q @ wk if onnx else torch.einsum("bhtd,hdc->bhtc", q, wk)  # queries in the raw key space
        # All heads now attend over the same raw keys: stack them as one head with heads*T
        # queries (softmax is per query row), so keys and values are never copied per head.
        q_in = q_in.reshape(b, 1, heads * t, -1)
        mixed = F.scaled_dot_product_attention(q_in, k.unsqueeze(1), v.unsqueeze(1), scale=d**-0.5)
        mixed = mixed.view(b, heads, t, -1)
        out = mixed @ wv.transpose(1, 2) if onnx else torch.einsum("bhtc,hdc->bhtd", mixed, wv)
        out = out + self.v_proj.bias.view(heads, 1, d)  # (B, heads, T, d)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.internal_dim))

    def _few_keys(self, q_flat: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of many (already projected, heads not split) queries (Bq, N, C') over a
        few raw keys and values (B, T, C).

        All heads' scores come from one product with a block-diagonal key matrix, laid out
        (N, heads*T) so no head split or merge is copied, and the output projection is folded
        into the values (softmax(QK) V Wo = softmax(QK) (V Wo)), which for T tokens is cheaper
        than projecting N attention outputs."""
        b, t, _ = k.shape
        heads, d = self.num_heads, self.internal_dim // self.num_heads
        # Score columns are ordered (token, head) so the softmax over tokens runs along a
        # strided axis with the heads contiguous, which vectorises; over a last axis of a few
        # tokens torch's softmax is several times slower.
        kh = self.k_proj(k).view(b, t, heads, d).permute(0, 2, 3, 1)  # (B, heads, d, T)
        eye = torch.eye(heads, dtype=kh.dtype, device=kh.device)
        k_block = (kh[..., None] * eye[None, :, None, None, :]).reshape(b, heads * d, t * heads)
        scores = (q_flat @ k_block) * d**-0.5  # (B, N, T*heads)
        n = scores.shape[1]
        probs = torch.softmax(scores.view(b, n, t, heads), dim=-2).view(b, n, t * heads)
        vh = self.v_proj(v).view(b, t, heads, d)
        w_out = self.out_proj.weight.view(-1, heads, d)  # (C, heads, d)
        # an einsum as in _few_queries; here the broadcast matmul's backward would materialise
        # a (B, T, heads, d, C) outer product
        onnx = torch.onnx.is_in_onnx_export()
        values = vh[..., None, :] @ w_out.permute(1, 2, 0) if onnx else torch.einsum("bthd,chd->bthc", vh, w_out)
        values = values.reshape(b, t * heads, -1)  # (B, T*heads, C)
        return torch.baddbmm(self.out_proj.bias, probs, values)

    def forward(
        self,
        q: torch.Tensor | None,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        q_heads: torch.Tensor | None = None,
        k_heads: torch.Tensor | None = None,
        v_heads: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of q over k/v, each (B, n, C); `*_heads` give an input already projected
        and split into heads (B, heads, n, C'/heads) in place of the raw one."""
        if q_heads is None and k_heads is None and k.shape[1] * self.num_heads < self.internal_dim < q.shape[1]:
            return self._few_keys(self.q_proj(q), k, v)
        q = self._heads(self.q_proj(q)) if q_heads is None else q_heads
        if k_heads is None and v_heads is None and q.shape[1] * q.shape[2] < self.internal_dim:
            return self._few_queries(q, k, v)
        k = self._heads(self.k_proj(k)) if k_heads is None else k_heads
        v = self._heads(self.v_proj(v)) if v_heads is None else v_heads
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def prepare_keys(self, keys: torch.Tensor, key_pe: torch.Tensor) -> dict[str, torch.Tensor]:
        """The image-side projections of this block, which do not depend on the prompts."""
        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return {
            "k": k,
            "t2i_k": t2i._heads(t2i.k_proj(k)),
            "t2i_v": t2i._heads(t2i.v_proj(keys)),
            "i2t_q": i2t.q_proj(k),  # heads not split: the few-keys path takes it whole
        }

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        prepared: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`prepared` (from `prepare_keys` on these keys) skips the image-side projections."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        pre = prepared or {}
        q = queries + query_pe
        k = pre["k"] if prepared else keys + key_pe
        t2i = self.cross_attn_token_to_image(q, k, keys, k_heads=pre.get("t2i_k"), v_heads=pre.get("t2i_v"))
        queries = self.norm2(queries + t2i)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        i2t = self.cross_attn_image_to_token
        if "i2t_q" in pre:
            mixed = i2t._few_keys(pre["i2t_q"], q, queries)
        else:
            mixed = i2t(k, q, queries)
        keys = self.norm4(mixed + keys)  # the per-prompt term first: a broadcast add into it
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare_image(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> dict[str, object]:
        """Prompt-independent work on one (1, C, h, w) image input, reusable for every prompt."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        return {"keys": keys, "key_pe": key_pe, "first": self.layers[0].prepare_keys(keys, key_pe)}

    def forward(
        self,
        image_embedding: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        point_embedding: torch.Tensor,
        prepared: dict[str, object] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (Bi, C, h, w) with Bi 1 or B; image_pe (1, C, h, w); tokens (B, T, C);
        or `prepared` from `prepare_image` in place of the image inputs.
        Returns the tokens (B, T, C) and the image tokens (B, h*w, C)."""
        if prepared is None:
            prepared = {
                "keys": image_embedding.flatten(2).transpose(1, 2),
                "key_pe": image_pe.flatten(2).transpose(1, 2),
            }
        keys, key_pe = prepared["keys"], prepared["key_pe"]
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, prepared.get("first") if i == 0 else None)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int,
        transformer: nn.Module,
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
        prepared: dict[str, object] | None = None,
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
        prepared: dict[str, object] | None = None,
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
