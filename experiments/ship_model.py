"""Copy a training run's last checkpoint into the package as the default model (fp16 safetensors).

    .venv/bin/python experiments/ship_model.py out/train/tiny [--note "what changed"]

The weights keep their provenance in the safetensors metadata: training step, config, data
and licence. Commit new weights only when they beat the committed ones on MODEL_CARD.md's figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from promptseg.checkpoints import build_model, default_checkpoint, save_weights
from promptseg.weights import DEFAULT_WEIGHTS, resolve

LICENCE = (
    "Trained on promptseg synthetic scenes and BSDS500 train+val (Berkeley Segmentation Data Set; "
    "research and education use only). See MODEL_CARD.md."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="Training output folder (holds last.safetensors, last.json).")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    info = json.loads((args.run / "last.json").read_text())
    model = build_model(checkpoint=args.run / "last.safetensors")
    model.weights_settings = resolve(DEFAULT_WEIGHTS).settings  # the settings chosen for the shipped weights
    dest = default_checkpoint()
    dest.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model_type": model.model_type,
        "step": str(info["step"]),
        "config": json.dumps(info["config"], default=str),
        "licence": LICENCE,
        "note": args.note,
    }
    save_weights(model, dest, meta, half=True)
    print(f"{dest} ({dest.stat().st_size / 1e6:.1f} MB, step {info['step']})")


if __name__ == "__main__":
    main()
