"""Hugging Face's SAM format against `transformers`' own SamModel: a ViT-B SamModel with random
weights, saved with save_pretrained, loaded by our loader (the folder, or its lone
model.safetensors) answers as SamModel does; `promptseg convert --to hf` writes a folder that
transformers loads back to the same tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import agreement, assert_close_scaled, randomize_, run
from promptseg import Predictor, build_model, sample_image_path

transformers = pytest.importorskip("transformers", reason="the text extra is installed in the test venv (make test)")

SIDE = 1024  # a square photo at the model's input size: the original frame is the model's


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    config = transformers.SamConfig(vision_config=transformers.SamVisionConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]))
    model = randomize_(transformers.SamModel(config), seed=5).eval()
    folder = tmp_path_factory.mktemp("hf") / "sam-vit-base"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pair(hf_folder):
    hf = transformers.SamModel.from_pretrained(hf_folder).eval()
    ours = build_model(checkpoint=hf_folder)
    assert ours.model_type == "vit_b"
    photo = np.asarray(Image.open(sample_image_path("coffee")).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC))
    predictor = Predictor(ours)
    predictor.set_image(photo)
    pixels = (torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() - ours.pixel_mean) / ours.pixel_std
    with torch.inference_mode():
        embedding = hf.get_image_embeddings(pixels)
    return hf, predictor, embedding


def test_the_embedding_is_sammodels(pair):
    _, predictor, embedding = pair
    assert_close_scaled(predictor.features, embedding)


PROMPTS = {
    "one point": dict(points=[[300.0, 400.0]], labels=[1]),
    "points with negatives": dict(points=[[300.0, 400.0], [120.0, 160.0], [700.0, 650.0]], labels=[1, 0, 1]),
    "box": dict(box=[150.0, 120.0, 800.0, 760.0]),
    "box and points": dict(box=[150.0, 120.0, 800.0, 760.0], points=[[300.0, 400.0], [200.0, 200.0]], labels=[1, 0]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prompts_answer_as_sammodel(pair, prompt, multimask):
    hf, predictor, embedding = pair
    p = PROMPTS[prompt]
    kwargs = {}
    if "points" in p:
        kwargs.update(input_points=torch.tensor([[p["points"]]]), input_labels=torch.tensor([[p["labels"]]]))
    if "box" in p:
        kwargs["input_boxes"] = torch.tensor([[p["box"]]])
    with torch.inference_mode():
        out = hf(image_embeddings=embedding, multimask_output=multimask, **kwargs)
    theirs_low, theirs_iou = out.pred_masks[0, 0], out.iou_scores[0, 0]
    answer = predictor.predict_low_res(
        np.array(p["points"]) if "points" in p else None, np.array(p["labels"]) if "points" in p else None,
        np.array(p["box"]) if "box" in p else None, multimask_output=multimask)
    ours_low, ours_iou = torch.as_tensor(answer.low_res)[0], torch.as_tensor(answer.iou)[0]
    assert ours_low.shape == theirs_low.shape
    assert_close_scaled(ours_low, theirs_low)
    assert_close_scaled(ours_iou, theirs_iou)
    assert agreement((ours_low > 0).numpy(), (theirs_low > 0).numpy()) >= 0.9999


def test_a_lone_safetensors_file_and_the_way_back(hf_folder, tmp_path):
    ours = build_model(checkpoint=hf_folder / "model.safetensors")
    assert ours.model_type == "vit_b"
    # ours -> promptseg file -> Hugging Face folder -> transformers: the same tensors as the original
    out = run("convert", hf_folder, tmp_path / "mine.safetensors", "--to", "promptseg")
    assert out.returncode == 0, out.stderr
    out = run("convert", tmp_path / "mine.safetensors", tmp_path / "back", "--to", "hf")
    assert out.returncode == 0 and "(vit_b)" in out.stderr, out.stderr
    original = transformers.SamModel.from_pretrained(hf_folder).state_dict()
    back = transformers.SamModel.from_pretrained(tmp_path / "back").state_dict()
    assert original.keys() == back.keys() and all(torch.equal(original[k], back[k]) for k in original)
    processor = transformers.SamProcessor.from_pretrained(tmp_path / "back")
    inputs = processor(images=Image.open(sample_image_path("coffee")), return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 1024, 1024)


def test_what_does_not_fit_is_one_clear_error(hf_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(hf_folder / "model.safetensors")
    del tensors["mask_decoder.iou_token.weight"]
    save_file(tensors, tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match=r"Hugging Face SamModel names but fits none of vit_b, vit_l, vit_h.*"
                                         r"closest vit_b: 1 missing \(e.g. mask_decoder.iou_token.weight\)"):
        build_model(checkpoint=tmp_path / "cut.safetensors")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="holds a 'bert' model"):
        build_model(checkpoint=tmp_path / "bert")
    with pytest.raises(ValueError, match="is a Hugging Face vit_b SamModel, not vit_l"):
        build_model("vit_l", checkpoint=hf_folder)
    (tmp_path / "empty").mkdir()
    out = run("convert", tmp_path / "empty", tmp_path / "x", "--to", "hf")
    assert out.returncode == 1 and "is a folder without config.json" in out.stderr and "Traceback" not in out.stderr
    out = run("convert", tmp_path / "cut.safetensors", tmp_path / "y", "--to", "onnx")
    assert out.returncode == 1 and "--to must be one of promptseg, hf" in out.stderr


def test_download_the_hf_files_then_use_them_by_name(hf_folder, pair, tmp_path):
    """`promptseg download vit_b.hf` from a mirror (a server on 127.0.0.1) fetches model.safetensors
    and the configs beside it; `--model vit_b.hf` answers as the folder does, and transformers
    loads the downloaded folder."""
    from server_helpers import FileServer

    files = {p.name: p.read_bytes() for p in hf_folder.iterdir() if p.is_file()}
    files["preprocessor_config.json"] = b'{"do_resize": true}'
    env = {"PROMPTSEG_HOME": str(tmp_path / "cache")}
    with FileServer(files.pop("model.safetensors"), name="model.safetensors", others=files) as server:
        out = run("download", "vit_b.hf", "--url", server.url, "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "cache" / "sam-vit-base"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert transformers.SamModel.from_pretrained(folder).config.vision_config.hidden_size == 768
    from safetensors.torch import load_file

    photo = np.asarray(Image.open(sample_image_path("coffee")).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "photo.png")  # the photo `pair` embedded
    out = run("embed", tmp_path / "photo.png", "--model", "vit_b.hf", "-o", tmp_path / "emb", "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    (saved,) = (tmp_path / "emb").glob("*.safetensors")
    assert_close_scaled(load_file(saved)["image_embedding"], pair[1].features)
