"""ViT image encoder: 16x16 patches, windowed and global attention with decomposed
relative-position bias, and a convolutional neck down to the embedding width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn
from .common import MLPBlock, sam_neck

# Global attention builds an additive bias of (heads, tokens, tokens); above this many
# elements it is built and consumed a few heads at a time to bound peak memory.
_BIAS_CHUNK_ELEMENTS = 64 * 1024 * 1024


def relative_table(q_len: int, k_len: int, table: torch.Tensor) -> torch.Tensor:
    """Look up relative-position vectors for every (query, key) pair along one axis.

    Returns a (q_len, k_len, C) tensor. A table of another length is resampled linearly.
    """
    span = 2 * max(q_len, k_len) - 1
    if table.shape[0] != span:
        table = F.interpolate(table.T[None], size=span, mode="linear")[0].T
    q_pos = torch.arange(q_len, device=table.device)[:, None] * max(k_len / q_len, 1.0)
    k_pos = torch.arange(k_len, device=table.device)[None, :] * max(q_len / k_len, 1.0)
    offset = (q_pos - k_pos) + (k_len - 1) * max(q_len / k_len, 1.0)
    return table[offset.long()]


class Attention(nn.Module):
    """Multi-head self-attention on a 2-D grid of tokens with decomposed relative positions."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative positions need the attention grid size (input_size)")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention from already projected (N, h, w, 3*dim) to (N, h, w, dim), before `proj`."""
        n, h, w, _ = qkv.shape
        heads = self.num_heads
        q, k, v = qkv.reshape(n, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            table_h = relative_table(h, h, self.rel_pos_h)
            table_w = relative_table(w, w, self.rel_pos_w)
            if not (torch.is_grad_enabled() or torch.jit.is_tracing()):
                return _blocked_rel_pos_attention(q, k, v, table_h, table_w, w).view(n, h, w, -1)
            step = max(1, _BIAS_CHUNK_ELEMENTS // (n * (h * w) ** 2))
            parts = []
            for s in range(0, heads, step):
                qs = q[:, s : s + step]
                grid_q = qs.reshape(n, -1, h, w, qs.shape[-1])
                bias_h = torch.einsum("nahwc,hkc->nahwk", grid_q, table_h).contiguous()
                bias_w = torch.einsum("nahwc,wkc->nahwk", grid_q, table_w).contiguous()
                # Written straight into a contiguous buffer: a broadcast add of the einsum
                # outputs would take their odd strides and need a second full copy.
                if torch.jit.is_tracing() or bias_h.requires_grad:  # graph export: `out=` has no graph
                    bias = bias_h[..., :, None] + bias_w[..., None, :]  # form; autograd: no `out=` either
                else:
                    bias = qs.new_empty(n, qs.shape[1], h, w, h, w)
                    torch.add(bias_h[..., :, None], bias_w[..., None, :], out=bias)
                bias = bias.view(n, -1, h * w, h * w)
                parts.append(F.scaled_dot_product_attention(qs, k[:, s : s + step], v[:, s : s + step], attn_mask=bias))
            out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return out.transpose(1, 2).reshape(n, h, w, -1)

    def attend_rows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, row0: int, h: int) -> torch.Tensor:
        """Global attention at inference for R rows of queries starting at grid row `row0`:
        projected queries (N, R, w, dim) over keys and values (N, heads, h*w, head_dim) of the
        whole h x w grid. Returns (N, R, w, dim), before `proj`."""
        n, rows, w, dim = q.shape
        q = q.view(n, rows * w, self.num_heads, -1).transpose(1, 2)
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, rows, w, dim)
        table_h = relative_table(h, h, self.rel_pos_h)[row0 : row0 + rows]
        table_w = relative_table(w, w, self.rel_pos_w)
        return _blocked_rel_pos_attention(q, k, v, table_h, table_w, w).view(n, rows, w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))


_BLOCK_BIAS_ELEMENTS = 1 << 22  # bias elements per attention call at inference (16 MB: within the L3 cache;
# measured fastest of 0.5 to 8 M on a global block of ViT-B here)
_BAND_TOKENS = 1024  # query tokens per band of a block at inference (see Block.forward)


def _blocked_rel_pos_attention(q, k, v, table_h, table_w, w: int) -> torch.Tensor:
    """Attention with the decomposed relative-position bias for R whole rows of queries of a
    grid w tokens wide: q (N, heads, R*w, d), k and v (N, heads, H*w, d), table_h (R, H, d) the
    query rows' relative vectors, table_w (w, w, d). Returns (N, R*w, heads, d).

    A block of windows, heads and query rows at a time: each block's bias is built (in one
    buffer, reused) and read while it is in the cache, instead of the whole (heads, R*w, H*w)
    bias going to memory and back. Every query's answer is computed as in one call."""
    n, heads, queries, d = q.shape
    h, tokens = table_h.shape[1], k.shape[2]
    q_rows = queries // w
    per_row = w * tokens  # bias elements of one query row, one head, one window
    rows = min(q_rows, max(1, _BLOCK_BIAS_ELEMENTS // per_row))
    hb = min(heads, max(1, _BLOCK_BIAS_ELEMENTS // (q_rows * per_row))) if rows == q_rows else 1
    nb = min(n, max(1, _BLOCK_BIAS_ELEMENTS // (heads * q_rows * per_row))) if hb == heads else 1
    out = q.new_empty(n, queries, heads, d)
    buffer = q.new_empty(nb * hb * rows * per_row)
    grid_q = q.reshape(n, heads, q_rows, w, d)
    for b0 in range(0, n, nb):
        b1 = min(n, b0 + nb)
        for a0 in range(0, heads, hb):
            a1 = min(heads, a0 + hb)
            ks, vs = k[b0:b1, a0:a1], v[b0:b1, a0:a1]
            for r0 in range(0, q_rows, rows):
                r1 = min(q_rows, r0 + rows)
                block = grid_q[b0:b1, a0:a1, r0:r1]
                bias_h = torch.einsum("nahwc,hkc->nahwk", block, table_h[r0:r1])
                bias_w = torch.einsum("nahwc,wkc->nahwk", block, table_w)
                bias = buffer[: (b1 - b0) * (a1 - a0) * (r1 - r0) * per_row].view(b1 - b0, a1 - a0, r1 - r0, w, h, w)
                torch.add(bias_h[..., :, None], bias_w[..., None, :], out=bias)
                part = F.scaled_dot_product_attention(q[b0:b1, a0:a1, r0 * w : r1 * w], ks, vs,
                                                      attn_mask=bias.view(b1 - b0, a1 - a0, -1, tokens))
                out[b0:b1, r0 * w : r1 * w, a0:a1] = part.transpose(1, 2)
    return out


def _to_windows(x: torch.Tensor, size: int, fill: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, H, W, C) at the bottom/right up to a multiple of `size` with `fill` (or zeros)
    and cut it into (B * nH * nW, size, size, C) windows."""
    b, h, w, c = x.shape
    hp, wp = (h + size - 1) // size * size, (w + size - 1) // size * size  # no negative floor division: traced
    # into a graph, integer division truncates
    if (hp, wp) != (h, w):
        padded = x.new_zeros(b, hp, wp, c) if fill is None else fill.to(x.dtype).expand(b, hp, wp, c).clone()
        padded[:, :h, :w] = x
        x = padded
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def _from_windows(x: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    hp, wp = padded
    h, w = hw
    b = x.shape[0] // ((hp // size) * (wp // size))
    x = x.view(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


class Block(nn.Module):
    """Pre-norm transformer block; `window_size` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        grid = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos, input_size=grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() or torch.jit.is_tracing()):
            return self._forward_bands(x)
        # The projection runs on the real tokens only; window padding tokens are zeros after
        # the norm, so their projection is just the bias, which is what they are filled with.
        qkv = self.attn.qkv(self.norm1(x))
        if self.window_size > 0:
            h, w = x.shape[1:3]
            windows, padded = _to_windows(qkv, self.window_size, self.attn.qkv.bias)
            mixed = _from_windows(self.attn.attend(windows), self.window_size, padded, (h, w))
        else:
            mixed = self.attn.attend(qkv)
        x = x + self.attn.proj(mixed)
        return x + self.mlp(self.norm2(x))

    def _forward_bands(self, x: torch.Tensor) -> torch.Tensor:
        """Inference a band of token rows at a time (a row of windows, or about _BAND_TOKENS
        queries of global attention), its attention then its MLP. A band's intermediates (qkv,
        windows, the MLP's 4x wider features) take a few MB, reused from the allocator's heap
        and mostly in the cache, where whole-grid ones (40-50 MB each for ViT-B) are fresh
        pages faulted in at every block (per ViT-B image ~600 k page faults and ~1 s of system
        time, 250 k with promptseg's allocator settings). Each token's arithmetic is the
        training path's; oneDNN's products round a little differently (~1e-6 relative)."""
        b, h, w, c = x.shape
        attn, mlp = self.attn, self.mlp
        weight, bias = attn.qkv.weight, attn.qkv.bias
        if self.window_size > 0:
            band = self.window_size
        else:
            band = max(1, _BAND_TOKENS // w)
            normed = self.norm1(x)
            kv = onednn.linear(normed, weight[c:], None if bias is None else bias[c:])
            k, v = kv.view(b, h * w, 2, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = x.new_empty(x.shape)  # contiguous whatever x's layout
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            xb = x[:, r0:r1]
            if self.window_size > 0:
                # padding tokens filled with the qkv bias, as in `forward`
                windows, padded = _to_windows(onednn.linear(self.norm1(xb), weight, bias), band, bias)
                mixed = _from_windows(attn.attend(windows), band, padded, (r1 - r0, w))
            else:
                q = onednn.linear(normed[:, r0:r1], weight[:c], None if bias is None else bias[:c])
                mixed = attn.attend_rows(q, k, v, r0, h)
            ob = out[:, r0:r1]
            torch.add(xb, onednn.linear(mixed, attn.proj.weight, attn.proj.bias), out=ob)
            hidden = onednn.linear(self.norm2(ob), mlp.lin1.weight, mlp.lin1.bias, gelu=True)
            ob += onednn.linear(hidden, mlp.lin2.weight, mlp.lin2.bias)
        return out


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tokens contiguous (B, H, W, C): the permuted view would carry the convolution's
        # channel-strided layout into every block (residual sums keep their input's layout),
        # and every norm and linear would copy it first
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class ImageEncoderViT(nn.Module):
    """(B, 3, img_size, img_size) normalised image -> (B, out_chans, img_size/16, img_size/16)."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = sam_neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_early(x, keep=False)[0]

    def forward_with_early(self, x: torch.Tensor, keep: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embedding and the tokens (B, g, g, embed_dim) after the first global-attention
        block (HQ-SAM's decoder reads them); None with `keep` False."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        early = None
        for block in self.blocks:
            x = block(x)
            if keep and early is None and block.window_size == 0:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), early
