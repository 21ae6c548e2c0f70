"""Known weights, the download cache, and loading/validating state dicts."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
from functools import cache
from pathlib import Path

import torch

from .hf_format import from_hf, is_hf_sam
from .model import CONFIGS, Sam, get_config
from .progress import progress
from .weights import DEFAULT_WEIGHTS, SETTINGS_KEY, WeightsSettings, downloadable
from .weights import names as weights_names
from .weights import resolve as resolve_weights

DEFAULT_MODEL = "tiny"  # the architecture of the default weights (weights.DEFAULT_WEIGHTS)


def default_checkpoint() -> Path:
    """The weights file of the default model, shipped inside the package."""
    return resolve_weights(DEFAULT_WEIGHTS).path(cache_dir())


def default_model(device: str | torch.device = "cpu") -> Sam:
    """The bundled default model (`tiny`) with its trained weights and their settings."""
    path = default_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(f"the bundled default model is missing ({path}); reinstall promptseg")
    return build_model(DEFAULT_MODEL, checkpoint=path, device=device, settings=resolve_weights(DEFAULT_WEIGHTS).settings)


def weights_file(name: str | None = None, checkpoint: str | os.PathLike | None = None) -> Path:
    """The weights file that a model name (a registry name or an architecture) or a checkpoint
    path names: the checkpoint, the bundled file, or a downloaded file's place in the cache
    (which may not be there yet)."""
    if checkpoint is not None:
        return Path(checkpoint)
    entry = resolve_weights(name)
    return entry.path(cache_dir())


def load_model(name: str | None = None, checkpoint: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> Sam:
    """The model a user names: a checkpoint file (its architecture `name` or detected), else the
    registry's weights of `name` (None: the bundled default), which must be bundled or downloaded."""
    if checkpoint is not None:
        arch = None if name is None else _architecture(name)
        return build_model(arch, checkpoint=checkpoint, device=device)
    if name in CONFIGS and name not in weights_names():
        raise ValueError(f"{name} has no bundled or official weights; pass the trained ones with --checkpoint PATH")
    entry = resolve_weights(name)
    path = entry.path(cache_dir())
    if not path.is_file():
        if entry.bundled:
            raise FileNotFoundError(f"the bundled weights {entry.name} are missing ({path}); reinstall promptseg")
        raise FileNotFoundError(
            f"no weights for {entry.name} in {cache_dir()}; run `promptseg download {entry.name}` or pass --checkpoint PATH"
        )
    return build_model(entry.architecture, checkpoint=path, device=device, settings=entry.settings)


def _architecture(name: str) -> str:
    """The architecture of a registry name, or `name` itself when it is one (e.g. `tiny_s8`)."""
    if name in CONFIGS:
        return name
    return resolve_weights(name).architecture


def cache_dir() -> Path:
    """Where downloaded weights live: $PROMPTSEG_HOME, else the platform's user cache."""
    env = os.environ.get("PROMPTSEG_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("promptseg"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    name: str,
    dest_dir: str | os.PathLike | None = None,
    url: str | None = None,
    quiet: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch published weights (a registry name such as `vit_b.sa1b`, or `vit_b`) into the cache,
    resuming a partial file, and verify them.

    The file is checked against its known size and SHA-256; a mismatching file is removed
    and ValueError raised. `url` overrides the published address (a mirror)."""
    try:
        entry = resolve_weights(name)
    except ValueError:
        entry = None
    if entry is None or entry.bundled:
        raise ValueError(f"no official weights named {name!r}; choose one of {', '.join(downloadable())}")
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    main = url or entry.url
    path = fetch_verified(main, dest / entry.filename, entry.size, entry.sha256, quiet, timeout,
                          what="the published one")
    for name, published in entry.companions:  # from beside the mirror's file when a mirror is given
        fetch_verified(main.rsplit("/", 1)[0] + "/" + name if url else published, path.parent / name, None, None,
                       True, timeout)
    return path


def fetch_verified(url: str, final: Path, size: int | None, sha256: str | None, quiet: bool = False,
                   timeout: float = 60.0, what: str = "the expected file") -> Path:
    """Download `url` to `final` unless a file of that size and SHA-256 is already there.

    A partial download (`final`.part) is resumed; a file of the wrong size or hash is removed
    and ValueError raised; an interrupted transfer raises ConnectionError and keeps the part.
    Where no size and hash are known (`None`), the server's length says when the file is whole,
    and the SHA-256 of what arrived is printed (unless `quiet`) for the user to compare."""
    final.parent.mkdir(parents=True, exist_ok=True)
    name = final.name
    if final.exists() and (size is None or final.stat().st_size == size):
        if sha256 is None or _sha256(final) == sha256:
            return final
        final.unlink()
    part = final.with_name(name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        reported = _fetch(url, part, have, size, quiet, timeout)
        size = size if size is not None else reported
    got = part.stat().st_size
    if size is not None and got < size:  # the server closed the connection early; keep what we have
        raise ConnectionError(
            f"download of {name} was interrupted at {got} of {size} bytes; run the same command again to resume"
        )
    if size is not None and got != size:
        part.unlink()
        raise ValueError(f"downloaded {name} has {got} bytes, expected {size}; removed it, try again")
    digest = _sha256(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise ValueError(
            f"downloaded {name} has SHA-256 {digest}, expected {sha256}; "
            f"the file was corrupt or not {what} and was removed"
        )
    if sha256 is None and not quiet:
        print(f"{name}: {got} bytes, SHA-256 {digest} (no checksum is published to compare it with)", file=sys.stderr)
    os.replace(part, final)
    return final


def _fetch(url: str, part: Path, have: int, total: int | None, quiet: bool, timeout: float) -> int | None:
    """Append the bytes of `url` from offset `have` to `part`; returns the file's whole length
    as the server states it (None if it does not)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the server says there is nothing past what we have
            return have
        raise ConnectionError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"cannot reach {url} ({exc}); check the network or pass a mirror URL") from None
    with response:
        if have and response.status != 206:  # no range support: start over
            have = 0
        length = response.headers.get("Content-Length")
        stated = have + int(length) if length is not None and length.isdigit() else None
        mode = "ab" if have else "wb"
        with progress(total or stated, part.name.removesuffix(".part"), quiet, start=have, unit="bytes") as advance, \
                open(part, mode) as f:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except OSError as exc:
                    raise ConnectionError(f"download of {url} was interrupted ({exc}); run it again to resume") from None
                if not chunk:
                    break
                f.write(chunk)
                advance(len(chunk))
    return stated


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: a file (`load_state_dict`), or a Hugging Face model folder
    (config.json and model.safetensors, `promptseg.hf_format`)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        from .hf_format import read_hf_folder

        return read_hf_folder(path)
    return load_state_dict(path)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint (.pth/.pt through torch's safe loader, or .safetensors) as a state dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder without config.json; pass the .pth or .safetensors file, "
                         "or a Hugging Face model folder")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes); download it again")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _as_weights(load_file(str(path)), path)
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"checkpoint {path} is truncated or corrupt ({exc}); download it again") from None
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        # what torch.save writes is an archive; random or damaged bytes can trip the GLOBAL check too
        if zipfile.is_zipfile(path) and ("GLOBAL" in reason or "Unsupported global" in reason):
            raise ValueError(
                f"checkpoint {path} holds Python objects beyond tensors ({reason}), which are not loaded for "
                "safety; if it is yours, save a plain state dict (model.state_dict()) with torch.save"
            ) from None
        raise ValueError(f"checkpoint {path} is truncated or corrupt, or holds more than plain tensors ({reason}); "
                         "download it again, or save a plain state dict") from None
    except Exception as exc:  # damaged bytes can fail anywhere in the unpickler (IndexError, KeyError...)
        raise ValueError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {_unpickler_reason(exc)}); "
            "download it again"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # training checkpoints that wrap the weights
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors); got {type(obj).__name__}")
    return _as_weights(obj, path)


def _unpickler_reason(exc: Exception) -> str:
    """The part of a torch.load error that says what was wrong, without torch's advice to load
    with weights_only=False (which would run whatever code the file holds)."""
    advice = ("weights_only", "Re-running", "documentation", "file an issue", "arbitrary code")
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not any(a in line for a in advice)]
    return " ".join(kept)[:300] or type(exc).__name__


def _as_weights(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Floating tensors in fp32 (checkpoints saved in fp16, bf16 or fp64 compute in fp32); a
    tensor with NaN or infinite values is refused, naming it."""
    out = {}
    for name, value in tensors.items():
        if value.is_floating_point():
            value = value.float()
            if not bool(torch.isfinite(value).all()):
                raise ValueError(
                    f"checkpoint {path} has NaN or infinite values in {name}; the weights are damaged (a diverged "
                    "training run, or a bad conversion): use an earlier or re-downloaded file"
                )
        out[name] = value
    return out


# The parts of Meta's SAM 2 checkpoints that only its video predictor uses.
SAM2_VIDEO_PREFIXES = ("memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
                       "mask_downsample.")
SAM2_VIDEO_KEYS = ("maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial")
_SAM2_RENAMES = (("sam_prompt_encoder.", "prompt_encoder."), ("sam_mask_decoder.", "mask_decoder."))


def is_meta_sam2(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is laid out as Meta's SAM 2 checkpoints are."""
    return any(k.startswith("sam_mask_decoder.") for k in state_dict)


def convert_meta_sam2(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Meta's SAM 2 / 2.1 state dict (its `model` dict) -> ours, the video-only keys it dropped,
    and the release it looks like ("sam2.1" when it has 2.1's video parts, else "sam2")."""
    out, skipped = {}, []
    for key, value in state_dict.items():
        if key.startswith(SAM2_VIDEO_PREFIXES) or key in SAM2_VIDEO_KEYS:
            skipped.append(key)
            continue
        for old, new in _SAM2_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        if key.startswith("mask_decoder.transformer.layers."):  # Meta's MLP is layers.0/1, SAM's lin1/lin2
            key = key.replace(".mlp.layers.0.", ".mlp.lin1.").replace(".mlp.layers.1.", ".mlp.lin2.")
        out[key] = value
    release = "sam2.1" if "no_obj_embed_spatial" in state_dict or "obj_ptr_tpos_proj.weight" in state_dict else "sam2"
    return out, skipped, release


def _sam2_release_type(model_type: str, release: str) -> str:
    """The SAM 2 configuration of `release` with the same image model as `model_type`."""
    size = model_type.rsplit("_hiera_", 1)[1]
    return f"{release}_hiera_{size}"


@cache
def expected_shapes(model_type: str) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes a configuration expects, built without allocating weights."""
    with torch.device("meta"):
        model = get_config(model_type).build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def detect_model_type(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The configuration whose names and shapes the state dict matches exactly, else None."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    for name in CONFIGS:
        if expected_shapes(name) == shapes:
            return name
    return None


def _closest_type(state_dict: dict[str, torch.Tensor]) -> str:
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}

    def score(name: str) -> float:
        exp = expected_shapes(name)
        hits = sum(1 for k, s in shapes.items() if exp.get(k) == s)
        return hits / max(len(exp), len(shapes))

    return max(CONFIGS, key=score)


def check_state_dict(state_dict: dict[str, torch.Tensor], model_type: str, source: str = "checkpoint") -> None:
    """Raise ValueError naming every way the state dict does not fit `model_type`."""
    expected = expected_shapes(model_type)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k])
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(state_dict[k].shape)} vs {expected[k]})")
    looks = detect_model_type(state_dict) or _closest_type(state_dict)
    hint = f"; it looks like a {looks} checkpoint" if looks != model_type else ""
    raise ValueError(f"{source} does not fit {model_type}: " + "; ".join(problems) + hint)


def _check_dtypes(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    wrong = sorted(k for k, v in expected.items() if v.is_floating_point() and not state_dict[k].is_floating_point())
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{source} holds {len(wrong)} weights as {state_dict[k].dtype} where floating point is needed "
            f"(e.g. {k}); it is not a model's weights as saved, or was converted wrongly"
        )


def weights_settings(checkpoint: str | os.PathLike) -> WeightsSettings | None:
    """The settings a weights file carries in its metadata (our .safetensors files), else None."""
    path = Path(checkpoint)
    if path.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(SETTINGS_KEY)
    except (SafetensorError, OSError):
        return None
    return None if text is None else WeightsSettings.from_metadata(text)


def build_model(
    model_type: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    settings: WeightsSettings | None = None,
) -> Sam:
    """Build a named architecture; with `checkpoint`, load its weights (strict) and detect the
    architecture if not given. The model's `weights_settings` are the file's own (its metadata),
    else `settings` (None: SAM's defaults apply)."""
    if checkpoint is None:
        if model_type is None:
            raise ValueError("name a model type (vit_b, vit_l, vit_h) or pass a checkpoint to load")
        model = get_config(model_type).build()
        model.model_type = model_type
        model.weights_settings = settings
        return model.to(device).eval()
    state_dict = read_checkpoint(checkpoint)
    release = None
    if is_hf_sam(state_dict):
        state_dict, hf_type = from_hf(state_dict, f"checkpoint {checkpoint}")
        if model_type is not None and model_type != hf_type:
            raise ValueError(f"checkpoint {checkpoint} is a Hugging Face {hf_type} SamModel, not {model_type}")
    elif is_meta_sam2(state_dict):
        state_dict, skipped, release = convert_meta_sam2(state_dict)
        if skipped:
            print(f"promptseg: {checkpoint}: skipped {len(skipped)} weights of SAM 2's video model "
                  "(memory attention, memory encoder, object pointers); images do not use them", file=sys.stderr)
    if model_type is None:
        model_type = detect_model_type(state_dict)
        if model_type is None:
            check_state_dict(state_dict, _closest_type(state_dict), f"checkpoint {checkpoint}")
        if release is not None and "_hiera_" in model_type:  # 2.0 and 2.1 share their image model
            model_type = _sam2_release_type(model_type, release)
    else:
        get_config(model_type)
        check_state_dict(state_dict, model_type, f"checkpoint {checkpoint}")
    with torch.device("meta"):
        model = get_config(model_type).build()
    _check_dtypes(state_dict, model.state_dict(), f"checkpoint {checkpoint}")
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.reset_pixel_buffers()  # unsaved buffers were built on meta
    model.model_type = model_type
    model.weights_settings = weights_settings(checkpoint) or settings
    return model.to(device).eval()


def save_weights(
    model: Sam, path: str | os.PathLike, metadata: dict[str, str] | None = None, half: bool = False
) -> None:
    """Save our own weights as safetensors, with string metadata (model type, provenance) and the
    model's `weights_settings`, when it has them; `half` stores floating tensors in fp16 (half the
    size; loading casts back to fp32)."""
    from safetensors.torch import save_file

    from .io import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        meta = dict(metadata or {})
        if getattr(model, "weights_settings", None) is not None:
            meta.setdefault(SETTINGS_KEY, model.weights_settings.to_metadata())
        save_file(tensors, str(tmp), metadata=meta)
