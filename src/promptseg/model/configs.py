"""Named model configurations and the builders that turn them into modules."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from .hiera import FpnNeck, Hiera, HieraImageEncoder
from .hq import MaskDecoderHQ, SamHQ
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .sam2 import Sam2
from .tiny_encoder import TinyEncoder
from .tiny_vit import TinyViTEncoder
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class ViTConfig:
    """Hyperparameters of a SAM model with a ViT image encoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    hq: bool = False  # HQ-SAM's decoder (its early tokens: the first global block's)

    def build(self) -> Sam:
        grid = self.img_size // self.patch_size
        encoder = ImageEncoderViT(
            img_size=self.img_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            out_chans=self.prompt_embed_dim,
            window_size=self.window_size,
            global_attn_indexes=self.global_attn_indexes,
        )
        return _sam(encoder, self.prompt_embed_dim, grid, self.img_size, self, self.embed_dim)


def _sam(encoder: nn.Module, dim: int, grid: int, img_size: int, cfg, early_dim: int) -> Sam:
    """SAM around `encoder`; HQ-SAM where `cfg.hq` (the encoder's early tokens `early_dim` wide)."""
    if getattr(cfg, "hq", False):
        return SamHQ(encoder, *_prompt_and_decoder(dim, grid, img_size, cfg, early_dim))
    return Sam(encoder, *_prompt_and_decoder(dim, grid, img_size, cfg))


def _prompt_and_decoder(dim: int, grid: int, img_size: int, cfg,
                        hq_early_dim: int | None = None) -> tuple[nn.Module, nn.Module]:
    prompt = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(img_size, img_size),
        mask_in_chans=cfg.mask_in_chans,
        draw_prompts=getattr(cfg, "draw_prompts", False),
    )
    transformer = TwoWayTransformer(
        depth=cfg.decoder_depth, embedding_dim=dim, num_heads=cfg.decoder_heads, mlp_dim=cfg.decoder_mlp_dim
    )
    if hq_early_dim is not None:
        return prompt, MaskDecoderHQ(dim, transformer, vit_dim=hq_early_dim)
    return prompt, MaskDecoder(transformer_dim=dim, transformer=transformer)


@dataclass(frozen=True)
class TinyConfig:
    """A SAM model with the small hierarchical encoder (`tiny`): SAM's prompt encoder and mask
    decoder unchanged, a 256-pixel input and a 16x16 (stride 16) or 32x32 (stride 8) embedding."""

    img_size: int = 256
    stride: int = 16
    dims: tuple[int, int, int] = (48, 96, 192)
    depths: tuple[int, int, int] = (1, 2, 2)
    attn_depth: int = 2
    num_heads: int = 6
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    # first prompts are also drawn as the mask input (see PromptEncoder.draw_prompts)
    draw_prompts: bool = True

    def build(self) -> Sam:
        encoder = TinyEncoder(
            img_size=self.img_size,
            dims=self.dims,
            depths=self.depths,
            attn_depth=self.attn_depth,
            num_heads=self.num_heads,
            out_chans=self.prompt_embed_dim,
            stride=self.stride,
        )
        return Sam(encoder, *_prompt_and_decoder(self.prompt_embed_dim, self.img_size // self.stride, self.img_size, self))


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM (`vit_t`): the TinyViT-5M image encoder distilled from SAM's ViT-H, and SAM's
    prompt encoder and mask decoder unchanged."""

    img_size: int = 1024
    dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (2, 4, 5, 10)
    windows: tuple[int, ...] = (7, 7, 14, 7)
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    hq: bool = False  # HQ-SAM's decoder (its early tokens: the second stage's output)

    def build(self) -> Sam:
        encoder = TinyViTEncoder(img_size=self.img_size, dims=self.dims, depths=self.depths, heads=self.heads,
                                 windows=self.windows, out_chans=self.prompt_embed_dim)
        return _sam(encoder, self.prompt_embed_dim, encoder.grid, self.img_size, self, self.dims[2])


@dataclass(frozen=True)
class HieraConfig:
    """Hyperparameters of a SAM 2 image model (Hiera trunk, FPN neck, SAM 2's decoder)."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    img_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    # the image predictor's fallback from an unstable single mask: (delta, stability threshold)
    dynamic_multimask: tuple[float, float] = (0.05, 0.98)

    def build(self) -> Sam2:
        trunk = Hiera(
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            stages=self.stages,
            global_att_blocks=self.global_att_blocks,
            window_spec=self.window_spec,
            window_pos_embed_bkg_spatial_size=self.window_pos_embed_bkg_spatial_size,
        )
        dim = self.prompt_embed_dim
        encoder = HieraImageEncoder(trunk, FpnNeck(dim, trunk.channel_list), img_size=self.img_size)
        grid = self.img_size // 16
        prompt = PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(self.img_size, self.img_size),
            mask_in_chans=self.mask_in_chans,
            boxes_as_points=True,
        )
        decoder = MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(
                depth=self.decoder_depth, embedding_dim=dim, num_heads=self.decoder_heads, mlp_dim=self.decoder_mlp_dim
            ),
            use_high_res_features=True,
            pred_obj_scores=True,
            iou_sigmoid=True,
            dynamic_multimask=self.dynamic_multimask,
        )
        return Sam2(encoder, prompt, decoder)


def _hiera_sizes() -> dict[str, HieraConfig]:
    """SAM 2.1's four sizes, and SAM 2.0's (the same image model; their checkpoints differ only
    in the video parts)."""
    sizes = {
        "t": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
        "s": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
        "b+": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20)),
        "l": HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8),
                         window_pos_embed_bkg_spatial_size=(7, 7)),
    }
    out = {f"sam2.1_hiera_{k}": v for k, v in sizes.items()}
    out.update({f"sam2_hiera_{k}": v for k, v in sizes.items()})
    return out


_VITS = {
    "vit_b": ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}

CONFIGS: dict[str, ViTConfig | TinyConfig | TinyViTConfig | HieraConfig] = {
    **_VITS,
    "vit_t": TinyViTConfig(),
    # HQ-SAM: SAM's ViTs and MobileSAM's TinyViT with the HQ decoder
    **{f"{name}_hq": replace(cfg, hq=True) for name, cfg in _VITS.items()},
    "vit_tiny_hq": TinyViTConfig(hq=True),
    "tiny": TinyConfig(),
    "tiny_s8": TinyConfig(stride=8),
    **_hiera_sizes(),
}


def get_config(name: str) -> ViTConfig | TinyConfig | TinyViTConfig | HieraConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model type {name!r}; choose one of {', '.join(CONFIGS)}") from None
