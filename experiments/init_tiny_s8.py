"""Warm-start weights for the `tiny_s8` experiment from the shipped `tiny` model.

    .venv/bin/python experiments/init_tiny_s8.py out/s8/init.safetensors

Every parameter the two configurations share is copied; the stride-8 path's new layers start
fresh, with the lateral projection at zero so the first embedding is the shipped encoder's,
upsampled. configs/tiny_s8.toml then trains from the file this writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from promptseg.checkpoints import build_model, default_checkpoint, save_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    args = ap.parse_args()
    model = build_model("tiny_s8")
    shipped = {k: v.float() for k, v in load_file(str(default_checkpoint())).items()}
    missing, unexpected = model.load_state_dict(shipped, strict=False)
    assert not unexpected and all(k.startswith(("image_encoder.lateral.", "image_encoder.fuse.")) for k in missing)
    torch.nn.init.zeros_(model.image_encoder.lateral.weight)
    torch.nn.init.zeros_(model.image_encoder.lateral.bias)
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.dest, {"model_type": "tiny_s8", "note": "warm start from the shipped tiny"})
    print(f"{args.dest}: {len(missing)} new tensors, the rest from {default_checkpoint().name}")


if __name__ == "__main__":
    main()
