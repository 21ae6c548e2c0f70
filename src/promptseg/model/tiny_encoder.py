"""A small hierarchical image encoder sized for a CPU (the `tiny` configuration).

Convolutional stages (stride 4, 8, 16) do the cheap local work at high resolution; a few
global self-attention blocks at stride 16 give every embedding token the whole image as
context, which is what lets a single click select a whole object. The neck is SAM's
(1x1 conv, norm, 3x3 conv, norm), so the prompt encoder and mask decoder see an embedding of
the same kind as with the ViT encoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock, sam_neck


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.GELU())
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

    def __init__(self, dim: int, expand: int = 4) -> None:
        super().__init__()
        hidden = dim * expand
        self.expand = ConvNormAct(dim, hidden, 1)
        self.depthwise = ConvNormAct(hidden, hidden, 3, groups=hidden)
        self.project = ConvNormAct(hidden, dim, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.depthwise(self.expand(x)))


class GlobalBlock(nn.Module):
    """Pre-norm transformer block over all tokens, with a depthwise conv for local position."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x + self.local(x)
        t = x.flatten(2).transpose(1, 2)  # (B, hw, C)
        q, k, v = self.qkv(self.norm1(t)).view(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        t = t + self.proj(a)
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class TinyEncoder(nn.Module):
    """Image (B, 3, S, S) -> embedding (B, out_chans, S/stride, S/stride), stride 16 or 8.

    With stride 8 the globally attended stride-16 features are upsampled and added to the
    stride-8 stage's features (a one-level feature pyramid), mixed by one more inverted residual,
    and the neck runs on that finer grid: twice the embedding resolution (and so twice the mask
    resolution) for the same attention cost.
    """

    def __init__(
        self,
        img_size: int = 256,
        dims: tuple[int, int, int] = (48, 96, 192),
        depths: tuple[int, int, int] = (1, 2, 2),
        attn_depth: int = 2,
        num_heads: int = 6,
        out_chans: int = 256,
        stride: int = 16,
    ) -> None:
        super().__init__()
        if stride not in (8, 16):
            raise ValueError(f"TinyEncoder stride must be 8 or 16, not {stride}")
        self.img_size = img_size
        self.stride = stride
        d1, d2, d3 = dims
        self.stem = nn.Sequential(ConvNormAct(3, d1 // 2, 3, 2), ConvNormAct(d1 // 2, d1, 3, 2))
        self.stage1 = nn.Sequential(*(MBConv(d1) for _ in range(depths[0])))
        self.down2 = ConvNormAct(d1, d2, 3, 2)
        self.stage2 = nn.Sequential(*(MBConv(d2) for _ in range(depths[1])))
        self.down3 = ConvNormAct(d2, d3, 3, 2)
        self.stage3 = nn.Sequential(*(MBConv(d3) for _ in range(depths[2])))
        self.attn = nn.Sequential(*(GlobalBlock(d3, num_heads) for _ in range(attn_depth)))
        if stride == 8:
            self.lateral = nn.Conv2d(d2, d3, 1)
            self.fuse = MBConv(d3, expand=2)
        self.neck = sam_neck(d3, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        fine = self.stage2(self.down2(x))
        x = self.attn(self.stage3(self.down3(fine)))
        if self.stride == 8:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + self.lateral(fine)
            x = self.fuse(x)
        return self.neck(x)
