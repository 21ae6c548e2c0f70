"""The model rearranged for ONNX export: an encoder graph from the resized image to the
embedding, and a decoder graph from the embedding and prompts to full-size mask logits.

SAM 2's graphs (`Sam2EncoderGraph`, `Sam2DecoderGraph`) also carry the encoder's two
high-resolution levels, `high_res_feats_0` (4x) and `high_res_feats_1` (8x), from the one to the
other, and the decoder adds the object-score logits to its outputs.

The decoder's inputs and outputs are those of Meta's SAM export, so clients written for it work
unchanged: prompts are points in the model's input frame with labels 1 foreground, 0
background, -1 padding, and 2 / 3 for a box's top-left / bottom-right corners.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Sam
from ..model.mask_decoder import stable_or_fallback
from ..model.prompt_encoder import draw_prompt_mask, paint_clicks
from ..model.sam import full_size_logits

ENCODER_INPUTS = ("input_image",)
ENCODER_OUTPUTS = ("image_embeddings",)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
HIGH_RES_NAMES = ("high_res_feats_0", "high_res_feats_1")
SAM2_ENCODER_OUTPUTS = (*ENCODER_OUTPUTS, *HIGH_RES_NAMES)
SAM2_DECODER_INPUTS = (DECODER_INPUTS[0], *HIGH_RES_NAMES, *DECODER_INPUTS[1:])
SAM2_DECODER_OUTPUTS = (*DECODER_OUTPUTS, "object_score_logits")
HQ_NAME = "hq_features"
HQ_ENCODER_OUTPUTS = (*ENCODER_OUTPUTS, HQ_NAME)
HQ_DECODER_INPUTS = (DECODER_INPUTS[0], HQ_NAME, *DECODER_INPUTS[1:])


class EncoderGraph(nn.Module):
    """input_image (h, w, 3) float RGB in 0..255, longest side img_size -> embedding (1, C, g, g).

    Normalisation and padding to the square input happen inside the graph."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        x = input_image.permute(2, 0, 1).unsqueeze(0)
        return self.sam.image_encoder(self.sam.preprocess(x))


class DecoderGraph(nn.Module):
    """Embedding and prompts -> full-size mask logits, IoU predictions and low-res logits.

    image_embeddings (1, C, g, g); point_coords (B, N, 2) and point_labels (B, N) in the input
    frame (a box is two points labelled 2 and 3; without a box, add a (0, 0) point labelled -1,
    as SAM pads); mask_input (B or 1, 1, 4g, 4g) with has_mask_input (1,) 1 or 0; orig_im_size
    (2,) as (H, W). Outputs carry all four mask tokens (0: the single-mask answer, 1-3: the three
    candidates), or with `return_single_mask` the best one, chosen as SAM's export chooses.
    """

    def __init__(self, sam: Sam, return_single_mask: bool = False) -> None:
        super().__init__()
        self.sam = sam
        self.return_single_mask = return_single_mask
        pe = sam.prompt_encoder
        table = torch.cat([pe.not_a_point_embed.weight, *(e.weight for e in pe.point_embeddings)])
        self.register_buffer("label_table", table.detach().clone(), persistent=False)  # labels -1..3
        self.register_buffer("image_pe", pe.get_dense_pe().detach().clone(), persistent=False)

    def sparse_embedding(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.sam.prompt_encoder
        enc = pe.pe_layer.forward_with_coords(coords + 0.5, pe.input_image_size)
        enc = torch.where((labels == -1).unsqueeze(-1), 0.0, enc)
        return enc + self.label_table[(labels + 1).clamp(0, 4).long()]

    def dense_embedding(self, coords, labels, mask_input, has_mask_input) -> torch.Tensor:
        pe = self.sam.prompt_encoder
        has = has_mask_input.reshape(-1, 1, 1, 1)
        if pe.draw_prompts:  # the model was trained with its prompts drawn into the mask input
            drawn = draw_prompt_mask((coords, labels), None, pe.mask_input_size, pe.input_image_size, coords.shape[0])
            painted = paint_clicks(mask_input, (coords, labels), pe.input_image_size)
            return pe.mask_downscaling(has * painted + (1 - has) * drawn)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has * pe.mask_downscaling(mask_input) + (1 - has) * no_mask

    def answer(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, high_res=None,
               object_scores: bool = False):
        """The decoder's low-res logits and IoU predictions of all four mask tokens (and the
        object-score logits, with `object_scores`); SAM 2 also reads the `high_res` levels."""
        labels = point_labels.float()
        sparse = self.sparse_embedding(point_coords, labels)
        dense = self.dense_embedding(point_coords, labels, mask_input, has_mask_input)
        return self.sam.mask_decoder.predict_masks(image_embeddings, self.image_pe, sparse, dense, high_res=high_res,
                                                   object_scores=object_scores)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        low_res, iou = self.answer(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
        if self.return_single_mask:
            low_res, iou = self.select_single_mask(low_res, iou, point_coords.shape[1])
        return self.to_full_size(low_res, orig_im_size), iou, low_res

    @staticmethod
    def select_single_mask(low_res: torch.Tensor, iou: torch.Tensor, num_points) -> tuple[torch.Tensor, torch.Tensor]:
        """One click (with its padding point): the best of the three candidates; more prompts:
        the single-mask token."""
        bias = torch.tensor([1000.0, 0.0, 0.0, 0.0], device=iou.device) * (num_points - 2.5)
        best = torch.argmax(iou + bias, dim=1)
        rows = torch.arange(iou.shape[0], device=iou.device)
        return low_res[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)

    def to_full_size(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        size = self.sam.img_size
        hw = orig_im_size.to(torch.float64)  # rounded in double, as `preprocess_shape` rounds
        input_hw = torch.floor(hw * (size / hw.max()) + 0.5).to(torch.int64)
        orig = orig_im_size.to(torch.int64)
        return full_size_logits(low_res, (input_hw[0], input_hw[1]), (orig[0], orig[1]), size)


class HqEncoderGraph(EncoderGraph):
    """`EncoderGraph` for HQ-SAM: the embedding and the image's HQ features (1, C/8, 4g, 4g)."""

    def forward(self, input_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = input_image.permute(2, 0, 1).unsqueeze(0)
        features, (hq,) = self.sam.encode(self.sam.preprocess(x))
        return features, hq


class HqDecoderGraph(DecoderGraph):
    """`DecoderGraph` for HQ-SAM: `hq_features` follows the embedding among the inputs; the
    outputs carry five masks, the four SAM tokens' then the HQ token's alone (an answer is one
    SAM token's logits plus the HQ token's, or the HQ token's alone), and the SAM tokens' four
    IoU predictions. With `return_single_mask`, one mask: the SAM token chosen as SAM's export
    chooses, plus the HQ token's."""

    def forward(self, image_embeddings, hq_features, point_coords, point_labels, mask_input, has_mask_input,
                orig_im_size):
        low_res, iou = self.answer(image_embeddings, point_coords, point_labels, mask_input, has_mask_input,
                                   (hq_features,))
        if self.return_single_mask:
            sam_low, iou = self.select_single_mask(low_res[:, :4], iou, point_coords.shape[1])
            low_res = sam_low + low_res[:, 4:]
        return self.to_full_size(low_res, orig_im_size), iou, low_res


class Sam2EncoderGraph(nn.Module):
    """input_image (S, S, 3) float RGB in 0..255, already resized to the square input (with
    `promptseg.transforms.resize_square`) -> the embedding (1, C, g, g) with the no-memory
    embedding added, and the 4x and 8x levels after `conv_s0` / `conv_s1`."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, input_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = input_image.permute(2, 0, 1).unsqueeze(0) / 255.0
        features, (s0, s1) = self.sam.encode(self.sam.preprocess(x))
        return features, s0, s1


class Sam2DecoderGraph(DecoderGraph):
    """`DecoderGraph` for SAM 2: the high-res levels follow the embedding among the inputs,
    points are in the square input frame (each axis scaled by its own factor; SAM 2 puts a box's
    corners first and always ends with a padding point), the full-size logits are one bilinear
    step from the low-res ones, and `object_score_logits` (B, 1) follows the outputs. With
    `return_single_mask`, the single-mask token's answer unless its logits are unstable, then
    the best candidate (SAM 2's dynamic fallback)."""

    def forward(self, image_embeddings, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                has_mask_input, orig_im_size):
        low_res, iou, obj = self.answer(image_embeddings, point_coords, point_labels, mask_input, has_mask_input,
                                        (high_res_feats_0, high_res_feats_1), object_scores=True)
        if self.return_single_mask:
            low_res, iou = self.dynamic_single_mask(low_res, iou, *self.sam.mask_decoder.dynamic_multimask)
        size = orig_im_size.to(torch.int64)
        masks = F.interpolate(low_res, size=(size[0], size[1]), mode="bilinear", align_corners=False)
        return masks, iou, low_res, obj

    @staticmethod
    def dynamic_single_mask(low_res: torch.Tensor, iou: torch.Tensor, delta: float,
                            threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """All four tokens' logits (B, 4, h, w) and IoU (B, 4) -> one mask per prompt."""
        rows = torch.arange(iou.shape[0], device=iou.device)
        best = torch.argmax(iou[:, 1:], dim=1) + 1
        return stable_or_fallback(low_res[:, :1], low_res[rows, best].unsqueeze(1), iou[:, :1],
                                  iou[rows, best].unsqueeze(1), delta, threshold)
