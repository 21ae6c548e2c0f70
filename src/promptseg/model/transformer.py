"""The mask decoder's two-way transformer, as the paper draws it: prompt tokens attend to
themselves and to the image tokens, and the image tokens attend back (SAM, Fig. 14).

Attention's fast paths for SAM's shapes, and the prompt-independent work prepared once per
image, live in `fast_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock
from .fast_attention import PreparedImage, PreparedKeys, few_keys, few_queries


class DecoderAttention(nn.Module):
    """Multi-head attention whose inner width may be downsampled; batch dims broadcast.

    The plain path is SAM's attention; for a few keys or a few queries `forward` takes the
    equivalent fast paths of `fast_attention` (chosen by shape)."""

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

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, C') -> (B, heads, n, C'/heads)."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor | None,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        q_heads: torch.Tensor | None = None,
        k_heads: torch.Tensor | None = None,
        v_heads: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of q over k/v, each (B, n, C); `*_heads` give an input already projected
        and split into heads (B, heads, n, C'/heads) in place of the raw one. With `residual`
        (broadcast to the output's shape) the result is residual + attention."""
        if q_heads is None and k_heads is None and k.shape[1] * self.num_heads < self.internal_dim < q.shape[1]:
            return few_keys(self, q, k, v, residual, projected=False)
        out = self._attend(q, k, v, q_heads, k_heads, v_heads)
        return out if residual is None else residual + out

    def _attend(self, q, k, v, q_heads, k_heads, v_heads) -> torch.Tensor:
        q = self.split_heads(self.q_proj(q)) if q_heads is None else q_heads
        if k_heads is None and v_heads is None and q.shape[1] * q.shape[2] < self.internal_dim:
            return few_queries(self, q, k, v)
        k = self.split_heads(self.k_proj(k)) if k_heads is None else k_heads
        v = self.split_heads(self.v_proj(v)) if v_heads is None else v_heads
        b, heads, n, d = q.shape
        if k.shape[0] == v.shape[0] == 1 and b > 1:
            # keys and values shared by every prompt: the prompts' queries go as one batch
            # rather than the keys and values being copied for each prompt
            out = F.scaled_dot_product_attention(q.transpose(0, 1).reshape(1, heads, b * n, d), k, v)
            out = out.view(heads, b, n, d).permute(1, 2, 0, 3)
        else:
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out_proj(out.reshape(b, n, self.internal_dim))


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
        self.self_attn = DecoderAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = DecoderAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = DecoderAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def prepare_keys(self, keys: torch.Tensor, key_pe: torch.Tensor) -> PreparedKeys:
        """The image-side projections of this block, which do not depend on the prompts."""
        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return PreparedKeys(k, t2i.split_heads(t2i.k_proj(k)), t2i.split_heads(t2i.v_proj(keys)), i2t.q_proj(k))

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        prepared: PreparedKeys | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`prepared` (from `prepare_keys` on these keys) skips the image-side projections."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        if prepared is None:
            k = keys + key_pe
            t2i = self.cross_attn_token_to_image(q, k, keys)
        else:
            k = prepared.k
            t2i = self.cross_attn_token_to_image(q, k, keys, k_heads=prepared.t2i_k, v_heads=prepared.t2i_v)
        queries = self.norm2(queries + t2i)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        i2t = self.cross_attn_image_to_token
        if prepared is None:
            keys = i2t(k, q, queries, residual=keys)
        else:
            keys = few_keys(i2t, prepared.i2t_q, q, queries, residual=keys)
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    """SAM's two-way transformer: `depth` blocks in which the prompt tokens attend to
    themselves and to the image, and the image attends back to the tokens; then a last
    token-to-image attention."""
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
        self.final_attn_token_to_image = DecoderAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare_image(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> PreparedImage:
        """Prompt-independent work on one (1, C, h, w) image input, reusable for every prompt."""
        # token-major copies: every prompt's elementwise work on them then reads memory in order
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        return PreparedImage(keys, key_pe, self.layers[0].prepare_keys(keys, key_pe))

    def forward(
        self,
        image_embedding: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        point_embedding: torch.Tensor,
        prepared: PreparedImage | None = None,
        final_tokens: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (Bi, C, h, w) with Bi 1 or B; image_pe (1, C, h, w); tokens (B, T, C);
        or `prepared` from `prepare_image` in place of the image inputs.
        Returns the tokens (B, T, C) and the image tokens (B, h*w, C); with `final_tokens`, only
        those tokens (B, len(final_tokens), C), the others skipping the last attention."""
        if prepared is None:
            prepared = PreparedImage(image_embedding.flatten(2).transpose(1, 2), image_pe.flatten(2).transpose(1, 2))
        keys, key_pe = prepared.keys, prepared.key_pe
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, prepared.first if i == 0 else None)
        if final_tokens is not None:  # each token attends alone here: the others' work is not needed
            queries, point_embedding = queries[:, final_tokens], point_embedding[:, final_tokens]
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
