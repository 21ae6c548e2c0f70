"""The fast attention paths of the mask decoder's two-way transformer.

Same results as `transformer.DecoderAttention`'s plain path, arranged for the shapes SAM's
decoder meets: a few prompt tokens against thousands of image tokens. The attention module
chooses among them by shape (one switch, in `DecoderAttention.forward`); prompt-independent
image-side work is prepared once per image (`PreparedImage`) and shared by every prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .transformer import DecoderAttention


@dataclass
class PreparedKeys:
    """One block's image-side projections, which do not depend on the prompts."""

    k: torch.Tensor  # image tokens plus their positional encoding
    t2i_k: torch.Tensor  # token->image attention's keys, split into heads
    t2i_v: torch.Tensor  # token->image attention's values, split into heads
    i2t_q: torch.Tensor  # image->token attention's queries, heads not split (the few-keys path takes it whole)


@dataclass
class PreparedImage:
    """Prompt-independent work on one image input, reusable for every prompt on it."""

    keys: torch.Tensor  # (1, h*w, C) image tokens
    key_pe: torch.Tensor  # (1, h*w, C) their positional encoding
    first: PreparedKeys | None = None  # the first block's projections


def few_queries(attn: DecoderAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of a few (already projected) queries over many raw keys and values.

    Instead of projecting every key and value, each head's query is carried back through
    the key projection (q_h . (W_h k + b_h) = (W_h^T q_h) . k + const, and a per-row constant
    does not change a softmax), and the value projection is applied after averaging
    (softmax weights sum to 1). Same result, a fraction of the work when heads x queries is
    smaller than the projected width. The scores are plain matrix products: for this few
    queries they run near the machine's matmul rate, a fused attention kernel at a third of it."""
    b, heads, t, d = q.shape
    wk = attn.k_proj.weight.view(heads, d, -1)  # (heads, d, C)
    wv = attn.v_proj.weight.view(heads, d, -1)
    # Per-head products as einsums (one batched matmul over heads): a broadcast matmul
    # against the (heads, d, C) weights materialises B copies of them in the backward pass,
    # which cost ~15 % of a training step. ONNX export keeps the MatMul form, which ONNX
    # Runtime (web included) runs at least as fast as an Einsum.
    onnx = torch.onnx.is_in_onnx_export()
    q_in = q @ wk if onnx else torch.einsum("bhtd,hdc->bhtc", q, wk)  # queries in the raw key space
    # All heads now attend over the same raw keys: stack them as heads*T queries of one head
    # (softmax is per query row), so keys and values are never copied per head.
    q_in = q_in.reshape(b, heads * t, -1) * d**-0.5
    # Scores computed laid out (keys, queries): the key side is the long one, and a product
    # with the long side as its rows runs faster. The softmax takes them one row per query
    # (a copy of the scores): down the columns of a few queries, torch's kernel runs mostly
    # scalar where the columns are not a whole number of its vectors (AVX-512: 56 columns,
    # 1.2 ms against 0.1 ms along rows).
    if k.shape[0] == 1 and b > 1:  # keys shared by every prompt: one product for all of them
        scores = k[0] @ q_in.reshape(-1, q_in.shape[-1]).t()  # (N, B*heads*T)
        mixed = (torch.softmax(scores.t(), dim=-1) @ v[0]).view(b, heads, t, -1)
    else:
        scores = k @ q_in.transpose(1, 2)  # (B, N, heads*T)
        mixed = (torch.softmax(scores.transpose(1, 2), dim=-1) @ v).view(b, heads, t, -1)
    out = mixed @ wv.transpose(1, 2) if onnx else torch.einsum("bhtc,hdc->bhtd", mixed, wv)
    out = out + attn.v_proj.bias.view(heads, 1, d)  # (B, heads, T, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, attn.internal_dim))


def few_keys(attn: DecoderAttention, q_flat: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             residual: torch.Tensor | None = None, projected: bool = True) -> torch.Tensor:
    """Attention of many (already projected, heads not split) queries (Bq, N, C') over a
    few raw keys and values (B, T, C), plus `residual` (broadcast to (B, N, C)) when given.
    With `projected` False the queries are raw (Bq, N, C) and their projection is folded into
    the keys ((x Wq^T + b) K = x (Wq^T K) + b K): for a few tokens a (C, T*heads) product
    instead of projecting N queries.

    All heads' scores come from one product with a block-diagonal key matrix, laid out
    (N, heads*T) so no head split or merge is copied, and the output projection is folded
    into the values (softmax(QK) V Wo = softmax(QK) (V Wo)), which for T tokens is cheaper
    than projecting N attention outputs."""
    b, t, _ = k.shape
    heads, d = attn.num_heads, attn.internal_dim // attn.num_heads
    # Score columns are ordered (token, head). The softmax over tokens takes the scores
    # copied to (B, token, head * N): over a last axis of a few tokens torch's softmax is
    # several times slower, and over the tokens with only the heads (8) inner its kernel
    # runs mostly scalar on an AVX-512 host (1.1 ms; with the two copies 0.3 ms).
    kh = attn.k_proj(k).view(b, t, heads, d).permute(0, 2, 3, 1)  # (B, heads, d, T)
    eye = torch.eye(heads, dtype=kh.dtype, device=kh.device)
    k_block = (kh[..., None] * eye[None, :, None, None, :]).reshape(b, heads * d, t * heads)
    if projected:
        scores = (q_flat @ k_block) * d**-0.5  # (B, N, T*heads)
    else:
        k_block = k_block * d**-0.5
        bias = (attn.q_proj.bias @ k_block)[:, None, :]  # (B, 1, T*heads)
        scores = torch.matmul(q_flat, attn.q_proj.weight.t() @ k_block) + bias
    n = scores.shape[1]
    rows = scores.transpose(1, 2).contiguous().view(b, t, heads * n)
    # back to (B, N, T*heads): the output product takes the layout it has always taken
    probs = torch.softmax(rows, dim=1).view(b, t * heads, n).transpose(1, 2).contiguous()
    vh = attn.v_proj(v).view(b, t, heads, d)
    w_out = attn.out_proj.weight.view(-1, heads, d)  # (C, heads, d)
    # an einsum as in few_queries; here the broadcast matmul's backward would materialise
    # a (B, T, heads, d, C) outer product
    onnx = torch.onnx.is_in_onnx_export()
    values = vh[..., None, :] @ w_out.permute(1, 2, 0) if onnx else torch.einsum("bthd,chd->bthc", vh, w_out)
    values = values.reshape(b, t * heads, -1)  # (B, T*heads, C)
    if residual is None:
        return torch.baddbmm(attn.out_proj.bias, probs, values)
    # Each row of probs sums to 1 per head, to `heads` in all: the output bias rides in the
    # values, and the product accumulates straight onto the residual.
    return torch.baddbmm(residual, probs, values + attn.out_proj.bias / heads)
