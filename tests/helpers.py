"""Shared helpers for the tests."""

from __future__ import annotations

import torch


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and saved buffer random values of a sensible scale.

    The reference initialises position embeddings and relative-position tables to zeros,
    which would hide errors there, so nothing is left at its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith(".weight") and t.dim() == 1:  # norm scales
                t.copy_(1.0 + 0.1 * noise)
            elif t.dim() == 1:  # biases
                t.copy_(0.05 * noise)
            elif "rel_pos" in name or "pos_embed" in name:
                t.copy_(0.3 * noise)
            elif t.dim() >= 2 and "embed" not in name and "gaussian" not in name:
                fan_in = t[0].numel() if "output_upscaling" not in name else t.shape[0]
                t.copy_(noise / fan_in**0.5)
            else:
                t.copy_(noise)
    return module


def assert_close_scaled(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """allclose with the absolute tolerance scaled to the reference's magnitude."""
    ours, ref = torch.as_tensor(ours).float(), torch.as_tensor(ref).float()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max().clamp_min(1e-12)
    err = (ours - ref).abs()
    bound = atol * scale + rtol * ref.abs()
    assert (err <= bound).all(), f"max abs error {err.max():.3g} (reference magnitude {scale:.3g})"


def agreement(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a == b).float().mean().item()
