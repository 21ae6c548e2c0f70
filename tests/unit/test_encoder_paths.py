"""The ViT encoder's inference path (a band of token rows at a time, attention with the
relative-position bias built a block at a time) gives the training path's answer, and the
training path differentiates (fine-tuning an unfrozen ViT encoder)."""

from __future__ import annotations

import pytest
import torch

from promptseg.model import image_encoder
from promptseg.model.image_encoder import ImageEncoderViT


def _encoder(use_rel_pos: bool = True, qkv_bias: bool = True) -> ImageEncoderViT:
    torch.manual_seed(0)
    # a 10 x 10 grid: windows of 4 need padding, global attention spans several bands
    enc = ImageEncoderViT(img_size=160, embed_dim=64, depth=3, num_heads=4, out_chans=32, window_size=4,
                          global_attn_indexes=(1,), use_rel_pos=use_rel_pos, qkv_bias=qkv_bias)
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.1)
    return enc


@pytest.mark.parametrize("band_tokens, bias_elements", [(1024, 1 << 22), (24, 3000), (10, 150)])
@pytest.mark.parametrize("use_rel_pos, qkv_bias", [(True, True), (True, False), (False, True)])
def test_inference_bands_match_the_training_path(monkeypatch, band_tokens, bias_elements, use_rel_pos, qkv_bias):
    monkeypatch.setattr(image_encoder, "_BAND_TOKENS", band_tokens)
    monkeypatch.setattr(image_encoder, "_BLOCK_BIAS_ELEMENTS", bias_elements)
    enc = _encoder(use_rel_pos, qkv_bias)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast, early_fast = enc.forward_with_early(x)
    plain, early_plain = enc.forward_with_early(x)  # parameters require grad: the training path
    assert plain.requires_grad and plain.shape == (2, 32, 10, 10)
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-5, atol=1e-5 * plain.abs().max().item())
    torch.testing.assert_close(early_fast, early_plain.detach(), rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast[0], fast[1])


def test_an_unfrozen_vit_encoder_trains():
    enc = _encoder()
    x = torch.randn(1, 3, 160, 160)
    enc(x).square().mean().backward()
    for block in enc.blocks:
        assert block.attn.rel_pos_h.grad.abs().sum() > 0
        assert block.attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("band_tokens", [2048, 100])
def test_tinyvit_inference_bands_match_the_training_path(monkeypatch, band_tokens):
    """MobileSAM's TinyViT at inference (MBConv rows, window rows and MLP tokens in bands) against
    its training path, on a grid where the windows need padding and, with 100 tokens a band,
    every stage runs several bands."""
    from promptseg.model import tiny_vit

    monkeypatch.setattr(tiny_vit, "_BAND_TOKENS", band_tokens)
    monkeypatch.setattr(tiny_vit, "_BAND_ROWS", 4)
    torch.manual_seed(0)
    enc = tiny_vit.TinyViTEncoder(img_size=256, out_chans=32).eval()  # grids 64, 32, 16, 16
    with torch.no_grad():
        for name, p in enc.named_parameters():
            p.normal_(1.0 if name.endswith("bn.weight") else 0.0, 0.1)
        for name, b in enc.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast, early_fast = enc.forward_with_early(x)
    plain, early_plain = enc.forward_with_early(x)
    assert plain.requires_grad and plain.shape == (2, 32, 16, 16)
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-5, atol=1e-5 * plain.abs().max().item())
    torch.testing.assert_close(early_fast, early_plain.detach(), rtol=1e-5, atol=1e-5 * early_plain.abs().max().item())
    assert not torch.equal(fast[0], fast[1])
