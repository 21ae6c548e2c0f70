"""Named model configurations and the builders that turn them into modules."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_encoder import TinyEncoder
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
        return Sam(encoder, *_prompt_and_decoder(self.prompt_embed_dim, grid, self.img_size, self))


def _prompt_and_decoder(dim: int, grid: int, img_size: int, cfg) -> tuple[nn.Module, nn.Module]:
    prompt = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(img_size, img_size),
        mask_in_chans=cfg.mask_in_chans,
        draw_prompts=getattr(cfg, "draw_prompts", False),
    )
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(
            depth=cfg.decoder_depth, embedding_dim=dim, num_heads=cfg.decoder_heads, mlp_dim=cfg.decoder_mlp_dim
        ),
    )
    return prompt, decoder


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


CONFIGS: dict[str, ViTConfig | TinyConfig] = {
    "vit_b": ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "tiny": TinyConfig(),
    "tiny_s8": TinyConfig(stride=8),
}


def get_config(name: str) -> ViTConfig | TinyConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model type {name!r}; choose one of {', '.join(CONFIGS)}") from None
