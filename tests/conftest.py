from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import randomize_  # noqa: E402
from promptseg import Predictor, build_model, read_image, sample_image_path  # noqa: E402
from promptseg.model import ViTConfig  # noqa: E402

KINDS = ("unit", "parity", "integration")


def pytest_collection_modifyitems(config, items):
    """Each test is marked with its kind, the name of its folder (tests/unit, tests/parity,
    tests/integration), so `-m unit` selects the quick tier."""
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


SMALL = ViTConfig(embed_dim=96, depth=2, num_heads=4, global_attn_indexes=(1,))


def reference_small():
    """The reference package's model with the SMALL encoder, for fast parity checks."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    enc = ImageEncoderViT(
        depth=SMALL.depth,
        embed_dim=SMALL.embed_dim,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=SMALL.num_heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=SMALL.global_attn_indexes,
        window_size=14,
        out_chans=256,
    )
    return Sam(
        image_encoder=enc,
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return read_image(sample_image_path("coffee.png"))


@pytest.fixture(scope="session")
def small_pair():
    """(reference, ours) small models with the same random weights."""
    torch.manual_seed(0)
    ref = randomize_(reference_small(), seed=3)
    ours = SMALL.build().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="session")
def small_predictor(small_pair, photo) -> Predictor:
    pred = Predictor(small_pair[1])
    pred.set_image(photo)
    return pred


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """A random, fully randomised vit_b state dict saved as Meta's checkpoints are."""
    from segment_anything import sam_model_registry

    ref = randomize_(sam_model_registry["vit_b"](), seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "random_vit_b.pth"
    torch.save(ref.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def vit_b_pair(vit_b_checkpoint):
    from segment_anything import sam_model_registry

    ref = sam_model_registry["vit_b"](checkpoint=str(vit_b_checkpoint)).eval()
    ours = build_model(checkpoint=vit_b_checkpoint)
    return ref, ours


@pytest.fixture(scope="session")
def sam2_t_checkpoint(tmp_path_factory):
    """A random SAM 2.1 Hiera-T state dict as Meta's package builds it (video parts included),
    and the file it is saved to as Meta's `.pt` files are ({"model": ...})."""
    from sam2.build_sam import build_sam2

    sd = randomize_(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu"), seed=7).state_dict()
    path = tmp_path_factory.mktemp("meta") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    return sd, path
