"""The SAM family on this CPU: for each type, our embedding and click against its own package in
one process, on the same (random) weights and photo, and every type side by side.

    .venv/bin/python benchmarks/bench_family.py [--repeat 5] [--types vit_t,hf_vit_b] [--json out.json]

Types and their own code: vit_t (MobileSAM) against `mobile_sam` (mobilesam-mirror); hf_vit_b
(SAM ViT-B in Hugging Face's format) against `transformers`' SamModel and SamProcessor;
vit_tiny_hq and vit_b_hq (HQ-SAM) against `segment_anything_hq` (one mask per click). A click
is one foreground point, three candidates brought to full size (SAM's predictor); for
transformers, its model call on the image's embeddings and `post_process_masks`.
"""

from __future__ import annotations

# first, before torch: promptseg's OpenMP setting (promptseg.cpu.tune_openmp) then holds for the whole
# process, the reference included
import promptseg  # noqa: F401

# isort: split
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from calibration import Machine, interleaved  # noqa: E402

POINT = [[300.0, 200.0]]


def _ours_and_theirs(row: dict, mine, theirs, photo, repeat: int) -> None:
    """Embedding and click times of two SAM-style predictors, runs interleaved."""
    import numpy as np

    pts, lab = np.array(POINT), np.array([1])
    embed = interleaved({"ours": lambda: mine.set_image(photo), "ref": lambda: theirs.set_image(photo)}, repeat)
    click = interleaved({"ours": lambda: mine.predict(pts, lab, multimask_output=True),
                         "ref": lambda: theirs.predict(pts, lab, multimask_output=True)}, repeat * 4)
    for name in ("ours", "ref"):
        row[f"{name}_embed_s"], row[f"{name}_click_s"] = embed[name], click[name]


def mobilesam(photo, repeat: int) -> dict:
    from mobile_sam import SamPredictor, sam_model_registry

    from helpers import randomize_
    from promptseg import Predictor, build_model

    ref = randomize_(sam_model_registry["vit_t"](), seed=0).eval()
    ours = build_model("vit_t")
    ours.load_state_dict(ref.state_dict())
    theirs, mine = SamPredictor(ref), Predictor(ours)
    row = {"type": "vit_t", "reference": "mobile_sam", "params_m": sum(p.numel() for p in ours.parameters()) / 1e6}
    _ours_and_theirs(row, mine, theirs, photo, repeat)
    return row


def hf_vit_b(photo, repeat: int) -> dict:
    import torch
    import transformers as t

    from helpers import randomize_
    from promptseg import Predictor, build_model

    config = t.SamConfig(vision_config=t.SamVisionConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                         global_attn_indexes=[2, 5, 8, 11]))
    with tempfile.TemporaryDirectory() as tmp:
        randomize_(t.SamModel(config), seed=0).save_pretrained(tmp)
        hf = t.SamModel.from_pretrained(tmp).eval()
        ours = build_model(checkpoint=tmp)
    processor = t.SamProcessor(t.SamImageProcessor())
    mine = Predictor(ours)
    row = {"type": "hf_vit_b", "reference": "transformers SamModel", "params_m": sum(p.numel() for p in ours.parameters()) / 1e6}
    state = {}

    def embed():
        inputs = processor(images=photo, return_tensors="pt")
        with torch.inference_mode():
            state["emb"] = hf.get_image_embeddings(inputs["pixel_values"])
        state["inputs"] = inputs

    def click():
        inputs = processor(images=photo, input_points=[[POINT]], return_tensors="pt")
        with torch.inference_mode():
            out = hf(image_embeddings=state["emb"], input_points=inputs["input_points"], multimask_output=True)
        processor.image_processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                     inputs["reshaped_input_sizes"])

    import numpy as np

    pts, lab = np.array(POINT), np.array([1])
    # the embedding first: the reference's click needs its embedding
    times = interleaved({"ours": lambda: mine.set_image(photo), "ref": embed}, repeat)
    row["ours_embed_s"], row["ref_embed_s"] = times["ours"], times["ref"]
    times = interleaved({"ours": lambda: mine.predict(pts, lab, multimask_output=True), "ref": click}, repeat * 4)
    row["ours_click_s"], row["ref_click_s"] = times["ours"], times["ref"]
    return row


def hq_sam(arch: str):
    """HQ-SAM on `arch` (vit_tiny, vit_b, ...) against `segment_anything_hq`: the embedding with
    the HQ features (ours make them once per image; its predictor at every click)."""

    def bench(photo, repeat: int) -> dict:
        import warnings

        from helpers import randomize_
        from promptseg import Predictor, build_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on timm's moved modules
            from segment_anything_hq import SamPredictor, sam_model_registry

            ref = randomize_(sam_model_registry[arch](), seed=0).eval()
        ours = build_model(f"{arch}_hq")
        ours.load_state_dict(ref.state_dict())
        theirs, mine = SamPredictor(ref), Predictor(ours)
        row = {"type": f"{arch}_hq", "reference": "segment_anything_hq",
               "params_m": sum(p.numel() for p in ours.parameters()) / 1e6}
        _ours_and_theirs(row, mine, theirs, photo, repeat)
        return row

    return bench


TYPES = {"vit_t": mobilesam, "hf_vit_b": hf_vit_b, "vit_tiny_hq": hq_sam("vit_tiny"), "vit_b_hq": hq_sam("vit_b")}


def main() -> None:
    import numpy as np
    from PIL import Image

    from promptseg import sample_image_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    photo = np.asarray(Image.open(sample_image_path("coffee")).convert("RGB").resize((1500, 1000), Image.BICUBIC))
    machine = Machine.start()
    rows = []
    for name in args.types.split(","):
        row = TYPES[name](photo, args.repeat)
        row["embed_x"] = row["ref_embed_s"] / row["ours_embed_s"]
        row["click_x"] = row["ref_click_s"] / row["ours_click_s"]
        rows.append(row)
        print(f"{name}: embedding {row['ours_embed_s']:.3f} s vs {row['ref_embed_s']:.3f} s ({row['embed_x']:.2f}x); "
              f"click {row['ours_click_s'] * 1000:.1f} ms vs {row['ref_click_s'] * 1000:.1f} ms ({row['click_x']:.2f}x)",
              flush=True)
    summary = machine.stop()
    print("\n| type | its own code | parameters | embedding ours / its own | x | click ours / its own | x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['type']} | {r['reference']} | {r['params_m']:.1f} M | {r['ours_embed_s']:.3f} / "
              f"{r['ref_embed_s']:.3f} s | {r['embed_x']:.2f} | {r['ours_click_s'] * 1000:.1f} / "
              f"{r['ref_click_s'] * 1000:.1f} ms | {r['click_x']:.2f} |")
    print(f"median ratios: embedding {statistics.median(r['embed_x'] for r in rows):.2f}x, "
          f"click {statistics.median(r['click_x'] for r in rows):.2f}x")
    print(machine.line())
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": summary, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
