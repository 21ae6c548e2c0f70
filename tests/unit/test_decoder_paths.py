"""The decoder's inference shortcuts give the answer of its plain path: banded upscaling, the
last attention on the read tokens only, keys shared across prompts, and everything mode's skip of
prompts the IoU filter drops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptseg import MaskGenerator


@pytest.fixture(scope="module")
def decoder(small_pair):
    return small_pair[1].mask_decoder


@pytest.mark.parametrize("h, w", [(64, 64), (5, 7), (70, 33)])
def test_banded_upscaling_matches_whole(decoder, h, w):
    gen = torch.Generator().manual_seed(h * w)
    src = torch.randn(3, h * w, 256, generator=gen)
    hyper = torch.randn(3, 3, 32, generator=gen)
    whole = decoder._upscale_whole(src, hyper, h, w)
    with torch.inference_mode():
        banded = decoder._upscale_masks(src, hyper, h, w)
    assert banded.shape == whole.shape == (3, 3, 4 * h, 4 * w)
    torch.testing.assert_close(banded, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    assert not torch.equal(banded[0, 0], banded[1, 0])  # each prompt got its own mask


def test_grad_path_is_the_whole_one(decoder):
    """Training differentiates through the upscaling: it must not run in place."""
    src = torch.randn(2, 64 * 64, 256, requires_grad=True)
    hyper = torch.randn(2, 4, 32)
    decoder._upscale_masks(src, hyper, 64, 64).sum().backward()
    assert src.grad is not None and src.grad.abs().sum() > 0


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 7, 256, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("prepared", [False, True])
def test_final_tokens_are_the_full_answers_rows(small_predictor, decoder, prepared):
    state = small_predictor.image_state
    pe = small_predictor.model.prompt_encoder.get_dense_pe()
    dense = small_predictor.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 64, 64)
    tokens = _tokens(3)
    with torch.inference_mode():
        if prepared:
            prep = decoder.prepare_image(state.features, pe, dense)
            full, src = decoder.transformer(None, None, tokens, prep)
            part, src2 = decoder.transformer(None, None, tokens, prep, [0, 2, 3, 4])
        else:
            full, src = decoder.transformer(state.features + dense, pe, tokens)
            part, src2 = decoder.transformer(state.features + dense, pe, tokens, None, [0, 2, 3, 4])
    torch.testing.assert_close(part, full[:, [0, 2, 3, 4]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(src2, src)


@pytest.mark.parametrize("which", ["random", "trained"])
def test_prepared_and_plain_paths_agree(small_predictor, which):
    """The prepared path (prompts batched against one prepared image) against the plain one
    (the image copied per prompt), on random weights and on the bundled model's trained ones."""
    from promptseg import Predictor, default_model, read_image, sample_image_path

    if which == "random":
        pred = small_predictor
    else:
        pred = Predictor(default_model())
        pred.set_image(read_image(sample_image_path("coffee.png")))
    model, state = pred.model, pred.image_state
    decoder = model.mask_decoder
    pe = model.prompt_encoder.get_dense_pe()
    dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *state.features.shape[-2:])
    tokens = _tokens(4, seed=1)
    with torch.inference_mode():
        prep = decoder.prepare_image(state.features, pe, dense)
        fast = decoder.predict_masks(state.features, pe, tokens, dense, prep)
        plain = decoder.predict_masks((state.features + 0).expand(4, -1, -1, -1), pe, tokens, dense)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_min_iou_skips_only_prompts_whose_masks_all_fail(small_predictor):
    state = small_predictor.image_state
    points = np.random.default_rng(0).uniform([0, 0], [600, 400], (24, 2))
    with torch.inference_mode():
        low, iou = small_predictor.decode_points(state, points)
        cut = float(iou.max(dim=1).values.median())
        low_cut, iou_cut = small_predictor.decode_points(state, points, min_iou=cut)
    torch.testing.assert_close(iou_cut, iou)
    wanted = (iou > cut).any(dim=1)
    assert 0 < int(wanted.sum()) < len(points)  # both kinds present
    torch.testing.assert_close(low_cut[wanted], low[wanted], rtol=1e-6, atol=1e-6)
    assert torch.isnan(low_cut[~wanted]).all()


class _NoSkip:
    """A predictor that ignores `min_iou`, as a backend may: every logit computed."""

    def __init__(self, predictor) -> None:
        self._p = predictor

    def decode_points(self, state, points, min_iou=None):
        return self._p.decode_points(state, points)

    def __getattr__(self, name):
        return getattr(self._p, name)


def test_everything_mode_gives_the_same_records_with_the_skip(small_pair, photo):
    """The skip changes no record: the IoU filter drops those prompts' masks unread."""
    from promptseg import Predictor

    opts = dict(points_per_side=6, pred_iou_thresh=0.5, stability_score_thresh=0.0, output_mode="uncompressed_rle")
    with torch.inference_mode():
        low, iou = Predictor(small_pair[1]).decode_points(*_state_and_grid(small_pair[1], photo))
    assert 0 < int((iou > 0.5).any(dim=1).sum()) < 36, "the threshold must skip some prompts and keep others"
    skipping = MaskGenerator(small_pair[1], **opts).generate(photo)
    gen = MaskGenerator(small_pair[1], **opts)
    gen.predictor = _NoSkip(gen.predictor)
    plain = gen.generate(photo)
    assert len(skipping) == len(plain) > 0
    for a, b in zip(skipping, plain):
        assert a["segmentation"] == b["segmentation"]
        assert a["predicted_iou"] == b["predicted_iou"] and a["stability_score"] == b["stability_score"]


def _state_and_grid(model, photo):
    from promptseg import Predictor
    from promptseg.masks import point_grid

    pred = Predictor(model)
    pred.set_image(photo)
    h, w = photo.shape[:2]
    return pred.image_state, point_grid(6) * np.array([w, h])


def _plain_attention(attn, q, k, v):
    """SAM's attention written out: project, split heads, softmax, merge, project."""
    b = max(q.shape[0], k.shape[0])
    qh = attn.split_heads(attn.q_proj(q).expand(b, -1, -1))
    kh = attn.split_heads(attn.k_proj(k).expand(b, -1, -1))
    vh = attn.split_heads(attn.v_proj(v).expand(b, -1, -1))
    probs = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, dim=-1)
    out = (probs @ vh).transpose(1, 2).reshape(b, q.shape[1], attn.internal_dim)
    return attn.out_proj(out)


@pytest.mark.parametrize("batch, shared", [(1, False), (3, False), (3, True)])
def test_attention_shortcuts_give_plain_attention(batch, shared):
    """Few keys (image tokens attending to 7 prompt tokens, the query projection folded into
    the keys) and few queries (7 tokens attending to 4096 image tokens, the key and value
    projections carried to the other side), with and without a residual, shared image tokens
    and autograd: the plain computation's answer and gradients."""
    from promptseg.model.transformer import DecoderAttention

    torch.manual_seed(0)
    attn = DecoderAttention(256, 8, downsample_rate=2)
    image = torch.randn(1 if shared else batch, 4096, 256, requires_grad=True)
    tokens = torch.randn(batch, 7, 256, requires_grad=True)
    residual = torch.randn(1 if shared else batch, 4096, 256)
    for q, kv, res in ((image, tokens, residual), (image, tokens, None), (tokens, image, None)):
        fast = attn(q, kv, kv, residual=res)
        plain = _plain_attention(attn, q, kv, kv) + (0 if res is None else res)
        assert fast.shape == plain.shape
        assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-5)
        g_fast = torch.autograd.grad(fast.square().sum(), (q, kv, attn.q_proj.weight))
        g_plain = torch.autograd.grad(plain.square().sum(), (q, kv, attn.q_proj.weight))
        for a, b in zip(g_fast, g_plain):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())
