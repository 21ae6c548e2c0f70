"""Small Hugging Face detectors with random weights, saved to a folder as a user saves a model:
Grounding DINO (Swin + BERT) and OWLv2 (CLIP), each with a tokenizer made here from a small
vocabulary. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ["cup", "spoon", "cat", "car", "person", "bicycle", "dog", "plate", "a", "photo", "of", "the"]


def make_grounding_dino(folder: Path, seed: int = 0, full: bool = False) -> Path:
    """A Grounding DINO with random weights and its processor, saved in `folder`: a small one, or
    with `full` the architecture of IDEA-Research/grounding-dino-tiny (Swin-T, BERT-base, 900
    queries, 6 + 6 layers; transformers' defaults) and its image sizes (800 to 1333)."""
    import torch
    import transformers as t

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", *WORDS]
    vocab += [f"[unused{i}]" for i in range((30522 if full else 0) - len(vocab))]
    tokenizer = t.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    if full:
        cfg = t.GroundingDinoConfig(text_config=t.BertConfig(vocab_size=len(vocab)))
        images = t.GroundingDinoImageProcessor()
    else:
        swin = t.SwinConfig(embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                            out_features=["stage2", "stage3", "stage4"])
        bert = t.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64)
        cfg = t.GroundingDinoConfig(backbone_config=swin, text_config=bert, num_queries=30, encoder_layers=1,
                                    decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, d_model=32,
                                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2,
                                    decoder_n_points=2, max_text_len=32)
        images = t.GroundingDinoImageProcessor(size={"shortest_edge": 320, "longest_edge": 480})
    model = t.GroundingDinoForObjectDetection(cfg).eval()
    model.save_pretrained(folder)
    t.GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def make_owlv2(folder: Path, seed: int = 0) -> Path:
    """A tiny OWLv2 with random weights and its processor, saved in `folder`. Its box head's last
    layer is zeroed, so that each box is the patch it was predicted from (random weights would
    give boxes of no size)."""
    import torch
    import transformers as t

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = {"!": 0, "<|startoftext|>": 1}  # OWL takes a query whose first id is 0 for padding
    for c in "abcdefghijklmnopqrstuvwxyz.":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = t.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    end = vocab["<|endoftext|>"]
    cfg = t.Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=end,
                         pad_token_id=end),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32)
    model = t.Owlv2ForObjectDetection(cfg).eval()
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(folder)
    processor = t.Owlv2Processor(image_processor=t.Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                                 tokenizer=tokenizer)
    processor.save_pretrained(folder)
    json.loads((folder / "config.json").read_text())  # written whole
    return folder
