"""TinyViT, the image encoder of MobileSAM (`vit_t`): a convolutional stem and stage of MBConv
blocks, then three stages of windowed attention with learned relative biases and a depthwise
"local" convolution after each attention, and SAM's neck to 256 channels.

Resolution: 1024 -> 256 (stem, stride 4) -> 128 -> 64, where it stays (MobileSAM keeps the last
merge at stride 1 so that the embedding is SAM's 64x64). Parameter names follow MobileSAM's
checkpoint, so its file loads as published (its ImageNet head included, unused)."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn
from .common import sam_neck


class ConvBN(nn.Sequential):
    """A convolution without bias, then batch norm (`c`, `bn`). In eval mode the two run as one
    convolution whose weights carry the norm's scale and shift (one pass over the feature map
    instead of two)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's weight and bias with the norm folded in (eval mode)."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.c.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        conv = self.c
        return F.conv2d(x, *self.fused(), conv.stride, conv.padding, conv.dilation, conv.groups)

    def gelu(self, x: torch.Tensor) -> torch.Tensor:
        """GELU(self(x)); on a CPU at inference, as one oneDNN convolution with the GELU (erf)
        applied as it writes, instead of a second pass over the feature map."""
        if not self.training and onednn.usable(x):
            conv = self.c
            try:
                return onednn.conv_gelu(x, *self.fused(), conv.padding, conv.stride, conv.groups)
            except (RuntimeError, AttributeError):
                onednn.disable()
        return F.gelu(self(x))


class Stem(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, H, W) -> (B, dim, H/4, W/4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq[2](self.seq[0].gelu(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, added to the input, GELU."""

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] > 2 * _BAND_ROWS and onednn.usable(x):
            try:
                return self._banded(x)
            except (RuntimeError, AttributeError):
                onednn.disable()
        return F.gelu(x + self.conv3(self.conv2.gelu(self.conv1.gelu(x))))

    def _banded(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` at inference, `_BAND_ROWS` output rows at a time: each band's expanded
        features (4x the channels) stay in the cache instead of going to memory and back. The
        depthwise 3x3 reads one row beyond the band on each side (computed again by the next band),
        and its zero padding applies at the image's edges only."""
        (w1, b1), (w2, b2), (w3, b3) = self.conv1.fused(), self.conv2.fused(), self.conv3.fused()
        groups = self.conv2.c.groups
        h = x.shape[2]
        out = torch.empty_like(x)
        for r0 in range(0, h, _BAND_ROWS):
            r1 = min(h, r0 + _BAND_ROWS)
            a0, a1 = max(0, r0 - 1), min(h, r1 + 1)
            y = onednn.conv_gelu(x[:, :, a0:a1], w1, b1, (0, 0), (1, 1), 1)
            y = onednn.conv_gelu(y, w2, b2, (1, 1), (1, 1), groups)[:, :, r0 - a0 : r1 - a0]
            z = F.conv2d(y, w3, b3)
            z += x[:, :, r0:r1]
            out[:, :, r0:r1] = F.gelu(z)
        return out


_BAND_ROWS = 16  # MBConv output rows per band at inference (of 8, 16, 32: fastest here)
_BAND_TOKENS = 2048  # TinyBlock tokens per band at inference (of 1024, 2048, 4096: fastest here)


class Merge(nn.Module):
    """Between stages: 1x1 conv, 3x3 depthwise (stride `stride`), 1x1 conv; takes a feature map
    or tokens on a `size` grid and gives tokens (B, L', out)."""

    def __init__(self, size: int, dim: int, out: int, stride: int) -> None:
        super().__init__()
        self.size = size
        self.conv1 = ConvBN(dim, out)
        self.conv2 = ConvBN(out, out, 3, stride, 1, groups=out)
        self.conv3 = ConvBN(out, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # tokens, seen as a channels-last map (as in TinyBlock.forward)
            x = x.reshape(x.shape[0], self.size, self.size, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.conv2.gelu(self.conv1.gelu(x)))
        return x.flatten(2).transpose(1, 2)


@cache
def relative_bias_index(window: int) -> torch.Tensor:
    """(window^2, window^2): for two positions of a window, the index of their offset
    (|dy| * window + |dx|) into the attention's bias table."""
    with torch.inference_mode(False):  # kept across calls: a plain tensor, whatever mode the first call ran in
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class WindowAttention(nn.Module):
    """Attention within one window: LayerNorm, then multi-head attention whose logits get a bias
    learned per head and per (|dy|, |dx|) offset."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.window = window  # its bias index is computed, not stored (`relative_bias_index`)

    def bias(self) -> torch.Tensor:
        """The logits' bias, (heads, n, n) for a window of n tokens."""
        return self.attention_biases[:, relative_bias_index(self.window).to(self.attention_biases.device)]

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention within each window of `x` (windows, n, C); `bias` is `self.bias()`, given
        by a caller that attends over several batches of windows."""
        b, n, _ = x.shape
        # per head, its q, k and v lie side by side in qkv's output
        qkv = onednn.linear(self.norm(x), self.qkv.weight, self.qkv.bias)  # oneDNN's product at inference
        q, k, v = qkv.view(b, n, self.heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        bias = self.bias() if bias is None else bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype))
        return onednn.linear(out.transpose(1, 2).reshape(b, n, -1), self.proj.weight, self.proj.bias)


class TinyMlp(nn.Module):
    """LayerNorm, then two linear layers with GELU between them."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        # at inference, fc1 and its GELU as one oneDNN op, as ConvBN.gelu
        hidden = onednn.linear(x, self.fc1.weight, self.fc1.bias, gelu=True)
        return onednn.linear(hidden, self.fc2.weight, self.fc2.bias)


class TinyBlock(nn.Module):
    """Windowed attention (the grid zero-padded to whole windows; padded positions take part as
    keys, as in the trained models), residual; a 3x3 depthwise convolution over the grid; the
    MLP, residual. Tokens (B, size^2, dim) in and out."""

    def __init__(self, size: int, dim: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.size = size
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = TinyMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        n = -(-self.size // self.window)  # windows per row and column, the last one padded
        # at inference, bands of about _BAND_TOKENS tokens: each band's projections and MLP
        # features stay in the cache; otherwise (training, export) all in one
        banded = onednn.usable(x)
        x = self._windows(x, max(1, _BAND_TOKENS // (self.window**2 * n)) if banded else n)
        # tokens seen as a channels-last map (a view; with the batch stride a permute keeps, oneDNN
        # runs the depthwise convolution channels-last, 25x faster here) and back, again a view
        x = self.local_conv(x.reshape(b, self.size, self.size, c).permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1).reshape(b, length, c)
        if not banded:
            return x + self.mlp(x)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for t0 in range(0, length, _BAND_TOKENS):
            part = x[:, t0 : t0 + _BAND_TOKENS]
            torch.add(part, self.mlp(part), out=out[:, t0 : t0 + _BAND_TOKENS])
        return out

    def _windows(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """x + attention within each window of the grid, `rows` rows of windows at a time. The
        grid is zero-padded at the right and bottom to whole windows."""
        b, _, c = x.shape
        s, w = self.size, self.window
        n = -(-s // w)
        grid = x.reshape(b, s, s, c)
        out = None if rows >= n else torch.empty(b, s, s, c, dtype=x.dtype, device=x.device)
        bias = self.attn.bias()
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            top, bottom = r0 * w, min(s, r1 * w)
            band = grid[:, top:bottom]
            padded = F.pad(band, (0, 0, 0, n * w - s, 0, (r1 - r0) * w - (bottom - top)))
            wins = padded.view(b, r1 - r0, w, n, w, c).transpose(2, 3).reshape(-1, w * w, c)
            mixed = self.attn(wins, bias).view(b, r1 - r0, n, w, w, c).transpose(2, 3).reshape(b, (r1 - r0) * w, n * w, c)
            if out is None:  # one band: the whole grid, differentiable and exportable
                return (band + mixed[:, : bottom - top, :s]).reshape(b, s * s, c)
            torch.add(band, mixed[:, : bottom - top, :s], out=out[:, top:bottom])
        return out.view(b, s * s, c)


class Stage(nn.Module):
    """A stage's blocks, then (all but the last stage) a merge to the next width."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViTEncoder(nn.Module):
    """MobileSAM's image encoder: (B, 3, 1024, 1024) normalised pixels -> (B, 256, 64, 64)."""

    def __init__(self, img_size: int = 1024, dims: tuple[int, ...] = (64, 128, 160, 320),
                 depths: tuple[int, ...] = (2, 2, 6, 2), heads: tuple[int, ...] = (2, 4, 5, 10),
                 windows: tuple[int, ...] = (7, 7, 14, 7), mlp_ratio: float = 4.0, mbconv_expand: float = 4.0,
                 out_chans: int = 256, head_classes: int = 1000) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = Stem(dims[0])
        size = img_size // 4
        stages = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            last = i == len(dims) - 1
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand) for _ in range(depth)]
            else:
                blocks = [TinyBlock(size, dim, heads[i], windows[i], mlp_ratio) for _ in range(depth)]
            merge = None
            if not last:
                # the merge into the widest stage keeps the grid: the embedding stays img_size / 16
                stride = 1 if i == len(dims) - 2 else 2
                merge = Merge(size, dim, dims[i + 1], stride)
                next_size = size // stride
            stages.append(Stage(blocks, merge))
            if not last:
                size = next_size
        self.layers = nn.ModuleList(stages)
        self.grid = size
        # TinyViT's ImageNet classifier, kept so that MobileSAM's file loads as published; unused
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], head_classes)
        self.neck = sam_neck(dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_early(x, keep=False)[0]

    def forward_with_early(self, x: torch.Tensor, keep: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embedding and the tokens (B, g, g, C) that the second stage's merge gives, the
        first at the embedding's grid (HQ-SAM's decoder reads them); None with `keep` False."""
        # channels last: the convolutional stages' depthwise convolutions run several times faster
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        early = None
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if keep and i == 1:
                early = x.reshape(x.shape[0], self.grid, self.grid, x.shape[-1])
        b, _, c = x.shape
        return self.neck(x.view(b, self.grid, self.grid, c).permute(0, 3, 1, 2)), early
