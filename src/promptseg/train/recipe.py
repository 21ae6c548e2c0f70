"""SAM's training recipe (paper section 3 and appendix A): losses and simulated interaction.

Per mask: a first prompt (a foreground point or a noisy box, equally likely), then rounds that
each add a point sampled uniformly from the error region (a missed pixel gives a foreground
point, a wrong one a background point) with the previous low-res logits as mask input, then
rounds with the mask input only. A single click predicts three masks and only the lowest-loss
one is back-propagated; a box or several clicks use the single-mask output.
Mask loss is focal and dice at 20:1; the IoU head regresses the predicted masks' real IoU (MSE).
SAM 2's models also read the encoder's high-resolution levels, and their object-score head
learns whether the target mask has any pixel (binary cross-entropy on its logit, as SAM 2's
training weighs it: 1); every sampled mask here has pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RecipeOptions:
    point_rounds: int = 8  # rounds that add one corrective point
    mask_only_rounds: int = 2  # final rounds with the mask input and no new point
    grad_rounds: int = -1  # rounds back-propagated besides the first and last (-1: all of them)
    # weight of the first round's loss against each other back-propagated round's (1: all equal);
    # the first prompt is what a user sees first, and it gets a shrinking share of the loss as more
    # rounds are back-propagated
    first_round_weight: float = 1.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    object_weight: float = 1.0  # SAM 2's object-score loss
    box_noise: float = 0.1  # noise std as a fraction of the box side ...
    box_noise_max: float = 20.0  # ... at most this many pixels at SAM's 1024 input (scaled to ours)
    # Compute budget: before this step only the first round runs (no corrective rounds); the
    # refinement rounds teach little until the model can segment from one prompt at all.
    interactive_from_step: int = 0

    def __post_init__(self):
        w = self.first_round_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ValueError(f"[recipe] first_round_weight must be a number >= 0 (1 weighs every round alike), got {w!r}")

    @property
    def rounds(self) -> int:
        return 1 + self.point_rounds + self.mask_only_rounds


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Mean sigmoid focal loss per mask over its pixels: (..., H, W) -> (...)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(-2)
    t = target.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    t = target > 0.5
    inter = (pred & t).flatten(-2).sum(-1).float()
    union = (pred | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def sample_points(region: torch.Tensor, gen: torch.Generator, cell: int) -> torch.Tensor:
    """One point per row, uniform over the True pixels of `region` (N, h, w) on a grid of
    `cell`-pixel cells, jittered within the cell; rows with an empty region get a uniform point."""
    n, h, w = region.shape
    weights = region.flatten(1).float()
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
    idx = torch.multinomial(weights, 1, generator=gen).squeeze(1)
    ys, xs = (idx // w).float(), (idx % w).float()
    jitter = torch.rand(n, 2, generator=gen) * cell
    return torch.stack([xs * cell + jitter[:, 0], ys * cell + jitter[:, 1]], 1)


def noisy_boxes(gt: torch.Tensor, gen: torch.Generator, opts: RecipeOptions, img_size: int) -> torch.Tensor:
    """XYXY boxes of the masks (N, H, W) with Gaussian noise on each coordinate."""
    rows, cols = gt.any(2), gt.any(1)
    ar = torch.arange(gt.shape[1]).float()
    ac = torch.arange(gt.shape[2]).float()
    y0 = torch.where(rows, ar, float("inf")).amin(1)
    y1 = torch.where(rows, ar, -1.0).amax(1) + 1
    x0 = torch.where(cols, ac, float("inf")).amin(1)
    x1 = torch.where(cols, ac, -1.0).amax(1) + 1
    box = torch.stack([x0, y0, x1, y1], 1)
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], 1)
    std = (side * opts.box_noise).clamp(max=opts.box_noise_max * img_size / 1024)
    box = box + torch.randn(box.shape, generator=gen) * std
    return box.clamp(0, img_size)


def mask_losses(logits: torch.Tensor, iou_pred: torch.Tensor, gt: torch.Tensor, opts: RecipeOptions):
    """Losses for low-res logits (N, K, h, w), upsampled to the size of the targets (N, H, W).

    With K > 1, each sample keeps only its lowest-loss mask; the IoU head is trained on all K.
    Returns (total, parts dict, per-sample IoU of the kept mask, index of the kept mask).
    """
    up = F.interpolate(logits, gt.shape[-2:], mode="bilinear", align_corners=False)
    target = gt[:, None].expand_as(up)
    focal = focal_loss(up, target)
    dice = dice_loss(up, target)
    per_mask = opts.focal_weight * focal + opts.dice_weight * dice
    best = per_mask.argmin(1)
    pick = best[:, None]
    ious = mask_iou(up.detach(), target)
    iou_loss = F.mse_loss(iou_pred, ious)
    total = per_mask.gather(1, pick).mean() + opts.iou_weight * iou_loss
    parts = {
        "focal": focal.gather(1, pick).mean().detach(),
        "dice": dice.gather(1, pick).mean().detach(),
        "iou_mse": iou_loss.detach(),
    }
    return total, parts, ious.gather(1, pick).squeeze(1), best


def object_loss(object_logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of object-score logits (N, 1) against whether each mask (N, H, W)
    has any pixel."""
    present = (gt.flatten(1) > 0.5).any(1).float()
    return F.binary_cross_entropy_with_logits(object_logits[:, 0], present)


def simulate(model, embeddings: torch.Tensor, gt: torch.Tensor, gen: torch.Generator, opts: RecipeOptions,
             grad_rounds: set[int], high_res: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Run the interactive rounds for masks `gt` (N, S, S) on `embeddings` (N, C, h, w) (and
    SAM 2's `high_res` levels, N each).

    Returns the weighted mean loss over the back-propagated rounds (the first round weighs
    `opts.first_round_weight`, the others 1), logging parts, and the IoU per round.
    """
    n, s = gt.shape[0], gt.shape[-1]
    pe = model.prompt_encoder.get_dense_pe()
    low_size = embeddings.shape[-1] * 4
    cell = s // low_size
    gt_low = F.adaptive_avg_pool2d(gt[:, None], low_size)[:, 0] > 0.5
    # losses at twice the low-res size: sub-cell boundary supervision at a quarter of the cost
    # of the full input size (area-averaged targets keep partial cells soft)
    gt_loss = F.adaptive_avg_pool2d(gt[:, None], min(s, 2 * low_size))[:, 0]
    use_box = torch.rand(n, generator=gen) < 0.5
    boxes = noisy_boxes(gt > 0.5, gen, opts, s)
    first = sample_points(gt > 0.5, gen, 1)
    coords = first[:, None]  # clicks so far (N, k, 2); box-first samples ignore the first one
    labels = torch.ones(n, 1)
    mask_input = None  # the first round has none (a model with draw_prompts draws the prompt)
    weight = {r: (opts.first_round_weight if r == 0 else 1.0) for r in grad_rounds}
    norm = max(sum(weight.values()), 1e-12)
    total = torch.zeros(())
    logs: dict[str, float] = {}
    round_iou = []
    for r in range(opts.rounds):
        grad = r in grad_rounds
        logits = torch.empty(n, 1, low_size, low_size)
        kept_iou = torch.empty(n)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            for sel, is_box in ((use_box, True), (~use_box, False)):
                if not sel.any():
                    continue
                idx = sel.nonzero().squeeze(1)
                if is_box:
                    pts = (coords[idx, 1:], labels[idx, 1:]) if coords.shape[1] > 1 else None
                    bx = boxes[idx]
                else:
                    pts, bx = (coords[idx], labels[idx]), None
                # three candidate masks only for a single click; a box (two corners) or several
                # clicks are not ambiguous and use the single-mask output
                multimask = r == 0 and not is_box
                mi = mask_input[idx] if mask_input is not None else None
                sparse, dense = model.prompt_encoder(pts, bx, mi)
                levels = None if high_res is None else tuple(f[idx] for f in high_res)
                low, iou, obj = model.mask_decoder(embeddings[idx], pe, sparse, dense, multimask, high_res=levels,
                                                   object_scores=True)
                share = len(idx) / n
                if grad:
                    loss, parts, k_iou, _ = mask_losses(low, iou, gt_loss[idx], opts)
                    if getattr(model.mask_decoder, "pred_obj_scores", False):
                        obj_loss = object_loss(obj, gt_loss[idx])
                        loss = loss + opts.object_weight * obj_loss
                        parts["object_bce"] = obj_loss.detach()
                    w = share * weight[r] / norm
                    total = total + w * loss
                    for k, v in parts.items():
                        logs[k] = logs.get(k, 0.0) + w * float(v)
                else:
                    up = F.interpolate(low, gt_loss.shape[-2:], mode="bilinear", align_corners=False)
                    ious = mask_iou(up, gt_loss[idx, None].expand_as(up))
                    k_iou = ious.max(1).values
                kept_iou[idx] = k_iou.detach()
                # next round's mask input: the mask a user would keep (highest predicted IoU)
                choice = iou.detach().argmax(1)
                logits[idx] = low.detach()[torch.arange(len(idx)), choice][:, None]
        round_iou.append(float(kept_iou.mean()))
        mask_input = logits
        if r < opts.point_rounds:
            pred = logits[:, 0] > 0
            fn, fp = gt_low & ~pred, pred & ~gt_low
            point = sample_points(fn | fp, gen, cell)
            py = (point[:, 1] / cell).long().clamp(0, low_size - 1)
            px = (point[:, 0] / cell).long().clamp(0, low_size - 1)
            label = gt_low[torch.arange(n), py, px].float()
            coords = torch.cat([coords, point[:, None]], 1)
            labels = torch.cat([labels, label[:, None]], 1)
    return total, logs, round_iou
