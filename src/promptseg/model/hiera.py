"""SAM 2's image encoder: a Hiera trunk (hierarchical windowed attention, queries pooled between
stages) and an FPN neck that brings its stages to one width.

Module and parameter names follow Meta's release (`trunk.blocks.N.attn.qkv`, `neck.convs.N.conv`),
so its state dicts load as published.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP


def window_partition(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, size, size, C), the grid zero-padded at its bottom and right
    to a multiple of `size`; also returns the padded (H, W)."""
    b, h, w, c = x.shape
    ph, pw = -h % size, -w % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // size, size, wp // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c), (hp, wp)


def window_merge(windows: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """The inverse of `window_partition`: windows back to (B, H, W, C), padding cut off."""
    hp, wp = padded
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.view(b, hp // size, wp // size, size, size, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    h, w = hw
    return x[:, :h, :w] if (h, w) != (hp, wp) else x


def _pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """2-D max pooling of a channels-last (B, H, W, C) tensor (floor of odd sizes)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


class HieraAttention(nn.Module):
    """Multi-head self-attention over each window (B, h, w, C); with `q_stride` the queries are
    max-pooled first, so the output grid is `q_stride` times smaller."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).view(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # (B, h*w, heads, d)
        if self.q_stride:
            q = _pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm transformer block on a (B, H, W, C) grid: attention within windows of
    `window_size` (0: over the whole grid), then an MLP. A block that widens the channels pools
    its queries by `q_stride` and projects and pools its shortcut to match."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window_size: int, q_stride: int | None = None,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = HieraAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, act=F.gelu)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _pool(shortcut, self.q_stride)
        size = self.window_size
        if size > 0:
            x, _ = window_partition(x, size)
        x = self.attn(x)
        if size > 0:
            if self.q_stride:  # the windows shrank with their queries
                size //= self.q_stride
            h, w = shortcut.shape[1:3]
            x = window_merge(x, size, (h + -h % size, w + -w % size), (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """A 7x7 stride-4 convolution from pixels to (B, H/4, W/4, C) tokens."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The Hiera trunk: stages of `HieraBlock`s, each stage after the first starting with a block
    that halves the grid and doubles the width (for the first `q_pool` transitions) and the heads.
    Returns every stage's output (B, C_i, H_i, W_i), highest resolution first."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        stages: tuple[int, ...],
        global_att_blocks: tuple[int, ...],
        window_spec: tuple[int, ...],
        window_pos_embed_bkg_spatial_size: tuple[int, int],
        q_pool: int = 3,
        q_stride: int = 2,
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"stages {stages} and window_spec {window_spec} must have the same length")
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        pooled = {end + 1 for end in self.stage_ends[:-1][:q_pool]}
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList()
        stage = 0
        dim = embed_dim
        for i in range(sum(stages)):
            # a stage's first block still windows at the previous stage's size (before pooling)
            window = 0 if i in global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, num_heads, stage = int(dim * dim_mul), int(num_heads * head_mul), stage + 1
            self.blocks.append(HieraBlock(dim, dim_out, num_heads, window, q_stride if i in pooled else None))
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]  # lowest resolution first

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, h, w, C): the background embedding resized (bicubic) plus the window one tiled."""
        pe = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pe = pe + win.tile(1, 1, h // win.shape[2], w // win.shape[3])
        return pe.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class _Lateral(nn.Module):
    """A 1x1 convolution, named as Meta's neck names it (`convs.N.conv`)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FpnNeck(nn.Module):
    """Each trunk stage to `d_model` channels by a 1x1 convolution; the levels in
    `top_down_levels` also add the next coarser level's output, upsampled (nearest) x2.
    `backbone_channel_list` is lowest resolution first, as the trunk's `channel_list`."""

    def __init__(self, d_model: int, backbone_channel_list: list[int], top_down_levels: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_Lateral(c, d_model) for c in backbone_channel_list)
        self.top_down_levels = tuple(top_down_levels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.convs) - 1
        out: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            out[i] = prev
        return out


class HieraImageEncoder(nn.Module):
    """Trunk and neck; returns the neck's levels, highest resolution first, without the
    `scalp` coarsest ones. SAM 2 keeps three: 4x, 8x and 16x below the input."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, img_size: int = 1024, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.img_size = img_size
        self.scalp = scalp

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = self.neck(self.trunk(x))
        return levels[: len(levels) - self.scalp] if self.scalp else levels
