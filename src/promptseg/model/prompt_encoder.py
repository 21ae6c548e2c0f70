"""Prompt encoder: points, boxes and a coarse mask to sparse and dense embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random Fourier features of normalised (x, y) coordinates."""

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        # coords in [0, 1]; map to [-1, 1], project, and take sin/cos of the phases.
        phase = (2 * math.pi) * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid, as (C, h, w)."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=matrix.device, dtype=matrix.dtype) + 0.5) / h
        xs = (torch.arange(w, device=matrix.device, dtype=matrix.dtype) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encoding of pixel coordinates (..., 2) given as (x, y) in an image of (h, w)."""
        scale = coords.new_tensor([1.0 / image_size[1], 1.0 / image_size[0]])
        return self._encode(coords.float() * scale)


class PromptEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
        draw_prompts: bool = False,
        boxes_as_points: bool = False,
    ) -> None:
        super().__init__()
        # With boxes_as_points (SAM 2), a box is given as its two corners, points labelled 2 and
        # 3, placed before the clicks; a padding point then always ends the points.
        self.boxes_as_points = boxes_as_points
        # With draw_prompts, a prompt without a mask input also gets its points and box drawn
        # as the mask input (see `draw_prompt_mask`), and with a mask input its clicks are
        # painted over it (see `paint_clicks`). SAM's models do not do this (False); the
        # CPU-trained `tiny` model does, because it learnt with it.
        self.draw_prompts = draw_prompts
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, C, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        coords = coords + 0.5  # pixel centres
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        pe = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        # Label -1 is padding: its encoding is replaced by the "not a point" vector. Labels 2
        # and 3 are a box's corners.
        table = torch.cat([self.not_a_point_embed.weight, *(e.weight for e in self.point_embeddings)])
        is_point = (labels != -1).unsqueeze(-1)
        return torch.where(is_point, pe, 0.0) + table[(labels + 1).clamp(0, 4).long()]

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        return pe + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])

    def _batch_size(self, points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse (B, N, C) and dense (B, C, h, w) embeddings."""
        if boxes is not None and self.boxes_as_points:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], device=corners.device).expand(corners.shape[0], 2)
            if points is not None:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels.to(points[1]), points[1]], dim=1))
            else:
                points = (corners, corner_labels)
            boxes = None
        bs = self._batch_size(points, boxes, masks)
        device = self.point_embeddings[0].weight.device
        sparse = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse_embeddings = torch.cat(sparse, dim=1)
        if masks is None and self.draw_prompts and (points is not None or boxes is not None):
            masks = draw_prompt_mask(points, boxes, self.mask_input_size, self.input_image_size, bs)
        elif masks is not None and self.draw_prompts and points is not None:
            masks = paint_clicks(masks, points, self.input_image_size)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_embeddings, dense


def _near_points(coords: torch.Tensor, size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """(B, N, h, w): which low-res cells lie within two cells of each point."""
    h, w = size
    cell_y, cell_x = image_size[0] / h, image_size[1] / w
    ys = ((torch.arange(h, device=coords.device) + 0.5) * cell_y).view(1, 1, h, 1)
    xs = ((torch.arange(w, device=coords.device) + 0.5) * cell_x).view(1, 1, 1, w)
    dx = xs - coords[..., 0, None, None].float()
    dy = ys - coords[..., 1, None, None].float()
    return dx**2 + dy**2 <= (2 * max(cell_x, cell_y)) ** 2


def paint_clicks(
    masks: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor], image_size: tuple[int, int], strength: float = 4.0
) -> torch.Tensor:
    """The clicks painted over mask-input logits (B or 1, 1, h, w): +strength within two cells of
    each foreground click, -strength around each background click (a later click wins where
    disks overlap). So a corrective click changes the mask input where it was made, as the
    first prompt is drawn (`draw_prompt_mask`)."""
    coords, labels = points
    near = _near_points(coords, masks.shape[-2:], image_size).float()  # (B, N, h, w)
    order = torch.arange(1, coords.shape[1] + 1, device=coords.device, dtype=near.dtype).view(1, -1, 1, 1)
    last_fg = (near * (labels == 1)[..., None, None] * order).amax(1, keepdim=True)  # (B, 1, h, w)
    last_bg = (near * (labels == 0)[..., None, None] * order).amax(1, keepdim=True)
    out = torch.where(last_bg > last_fg, -strength, masks)
    return torch.where(last_fg > last_bg, strength, out)


def draw_prompt_mask(
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    size: tuple[int, int],
    image_size: tuple[int, int],
    batch: int,
    strength: float = 4.0,
) -> torch.Tensor:
    """Prompts drawn as mask-input logits (B, 1, h, w) over the padded input square: -strength
    everywhere, +strength inside each box and within two cells of each foreground point.

    A point labelled 2 followed by one labelled 3 is a box's top-left and bottom-right corner
    (the ONNX decoder's input form), drawn as that box."""
    h, w = size
    cell_y, cell_x = image_size[0] / h, image_size[1] / w
    device = points[0].device if points is not None else boxes.device
    ys = ((torch.arange(h, device=device) + 0.5) * cell_y).view(1, h, 1)
    xs = ((torch.arange(w, device=device) + 0.5) * cell_x).view(1, 1, w)
    inside = torch.zeros(batch, h, w, dtype=torch.bool, device=device)
    if boxes is not None:
        b = boxes.reshape(batch, 4).float()
        in_x = (xs >= b[:, 0, None, None]) & (xs <= b[:, 2, None, None])
        inside = in_x & (ys >= b[:, 1, None, None]) & (ys <= b[:, 3, None, None])
    if points is not None:
        coords, labels = points
        dx = xs[:, None] - coords[..., 0, None, None].float()  # (B, N, 1, w)
        dy = ys[:, None] - coords[..., 1, None, None].float()  # (B, N, h, 1)
        near = _near_points(coords, size, image_size) & (labels == 1)[..., None, None]
        # box corners: each label-2 point and the point after it
        nxt = torch.cat([coords[:, 1:], coords[:, -1:]], dim=1).float()
        corner = (labels == 2)[..., None, None]
        in_x = (dx >= 0) & (xs[:, None] <= nxt[..., 0, None, None])
        in_y = (dy >= 0) & (ys[:, None] <= nxt[..., 1, None, None])
        inside = inside | (near | (corner & in_x & in_y)).any(1)
    out = torch.full((batch, 1, h, w), -strength, device=device)
    return out.masked_fill(inside[:, None], strength)
