"""The training loop: a TOML config in, safetensors checkpoints, a CSV log and a curve plot out.

Resumable and deterministic: batch `step` is drawn from generators seeded by (seed, step), so a
run stopped and resumed gives the same batches as one that never stopped.
"""

from __future__ import annotations

import csv
import json
import math
import time
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..progress import progress
from .recipe import RecipeOptions, simulate


@dataclass
class TrainConfig:
    model: str = "tiny"
    checkpoint: str | None = None  # start from these weights (fine-tuning)
    freeze_image_encoder: bool = False
    data: list[dict] = field(default_factory=list)
    output: str = "out/train"
    steps: int = 1000
    batch_size: int = 8
    masks_per_image: int = 4
    lr: float = 1e-3
    encoder_lr_scale: float = 1.0
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 100
    min_mask_area: float = 0.002
    threads: int = 0  # 0: torch's default
    device: str = "cpu"
    recipe: RecipeOptions = field(default_factory=RecipeOptions)
    base_dir: Path = field(default=Path("."), repr=False)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        return cls.from_dict(read_config_doc(path), path.parent)

    @classmethod
    def from_dict(cls, doc: dict, base_dir: Path = Path(".")) -> TrainConfig:
        doc = dict(doc)
        recipe = doc.pop("recipe", {})
        flat = {}
        for section in ("model", "train"):
            flat.update(doc.pop(section, {}))
        data = doc.pop("data", [])
        if "type" in flat:
            flat["model"] = flat.pop("type")
        names = {f.name for f in fields(cls)} - {"recipe", "base_dir", "data"}
        unknown = sorted(set(flat) - names) + sorted(doc)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        rnames = {f.name for f in fields(RecipeOptions)}
        if set(recipe) - rnames:
            raise ValueError(f"unknown [recipe] keys: {', '.join(sorted(set(recipe) - rnames))}")
        if not data:
            raise ValueError("the config names no [[data]] sources")
        for d in data:
            if "path" not in d:
                raise ValueError(f"a [[data]] source has no path: {d}")
        return cls(**flat, data=data, recipe=RecipeOptions(**recipe), base_dir=Path(base_dir))

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("recipe", "base_dir")}
        out["recipe"] = {f.name: getattr(self.recipe, f.name) for f in fields(self.recipe)}
        return out

    def _path(self, value: str) -> Path:
        from .data import config_path

        return config_path(value, self.base_dir)

    def out_dir(self) -> Path:
        return self._path(self.output)

    def checkpoint_path(self) -> Path | None:
        """The weights to start from; a relative path is relative to the config file, as every path in it."""
        return self._path(self.checkpoint) if self.checkpoint else None


# keys whose values are paths, relative to the file that writes them
_PATH_KEYS = {"model": ("checkpoint",), "train": ("output",)}
_DATA_PATH_KEYS = ("path", "images")


def read_config_doc(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The TOML of a training config with its `extends` chain merged in, paths relative to `path`'s folder.

    `extends = "other.toml"` (relative to this file) starts from that config: this file's
    [model], [train] and [recipe] keys override the other's one by one, and its [[data]] list, if
    it has one, replaces the other's whole. So a stage that differs from the last in a few keys
    says only those.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    parent_name = doc.pop("extends", None)
    if parent_name is None:
        return doc
    if not isinstance(parent_name, str) or not parent_name:
        raise ValueError(f"{path}: extends must be the path of another training config, got {parent_name!r}")
    from .data import config_path

    parent_path = config_path(parent_name, path.parent)
    chain = (*_seen, path.resolve())
    if parent_path.resolve() in chain:
        names = " -> ".join(p.name for p in (*chain, parent_path))
        raise ValueError(f"training configs extend each other in a loop: {names}")
    if not parent_path.is_file():
        raise FileNotFoundError(f"{path} extends {parent_name!r}, but {parent_path} does not exist")
    base = _rebase_paths(read_config_doc(parent_path, chain), parent_path.parent, path.parent)
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def _rebase_paths(doc: dict, src: Path, dest: Path) -> dict:
    """`doc`'s relative paths, written in folder `src`, made to read the same from folder `dest`."""
    if src.resolve() == dest.resolve():
        return doc
    from .data import config_path

    def fix(value):
        return str(config_path(value, src).resolve()) if isinstance(value, str) else value

    doc = dict(doc)
    for section, keys in _PATH_KEYS.items():
        if isinstance(doc.get(section), dict):
            doc[section] = {k: fix(v) if k in keys else v for k, v in doc[section].items()}
    if isinstance(doc.get("data"), list):
        doc["data"] = [{k: fix(v) if k in _DATA_PATH_KEYS else v for k, v in d.items()} if isinstance(d, dict) else d
                       for d in doc["data"]]
    return doc


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def grad_round_set(step: int, opts: RecipeOptions, gen: torch.Generator) -> set[int]:
    last = opts.rounds - 1
    if opts.grad_rounds < 0:
        return set(range(opts.rounds))
    middle = torch.randperm(max(0, last - 1), generator=gen)[: opts.grad_rounds] + 1
    return {0, last, *(int(v) for v in middle)}


LOG_FIELDS = ["step", "lr", "loss", "focal", "dice", "iou_mse", "object_bce", "iou_first", "iou_last", "samples_per_s"]


def _build(cfg: TrainConfig):
    from ..checkpoints import build_model

    model = build_model(cfg.model, cfg.checkpoint_path())
    model.train()
    if cfg.freeze_image_encoder:
        model.image_encoder.requires_grad_(False)
        model.image_encoder.eval()
    return model.to(cfg.device)


def _inputs(model, batch, device: str) -> torch.Tensor:
    """Normalised images with the padding at zero, exactly as `Sam.preprocess` pads at inference
    (the sampler pads raw pixels with black, which normalises to a colour the model never sees).
    SAM 2's models take [0, 1] images resized to the square, with no padding."""
    images = batch.images.to(device)
    images = model.preprocess(images / 255.0 if model.square_input else images)
    for i, (h, w) in enumerate(batch.sizes):
        images[i, :, h:] = 0
        images[i, :, :, w:] = 0
    return images


def _param_groups(model, cfg: TrainConfig):
    enc, rest_decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("image_encoder.") and p.ndim > 1:
            enc.append(p)
        elif p.ndim <= 1 or "embed" in name or "pos" in name:
            no_decay.append(p)
        else:
            rest_decay.append(p)
    groups = [
        {"params": rest_decay, "weight_decay": cfg.weight_decay, "scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "scale": 1.0},
    ]
    if enc:
        groups.append({"params": enc, "weight_decay": cfg.weight_decay, "scale": cfg.encoder_lr_scale})
    return [g for g in groups if g["params"]]


def save_checkpoint(model, optimizer, step: int, cfg: TrainConfig, out: Path, metrics: dict) -> Path:
    from ..checkpoints import save_weights
    from ..io import atomic_path

    meta = {
        "model_type": cfg.model,
        "step": str(step),
        "config": json.dumps(cfg.to_json(), default=str),
        "metrics": json.dumps(metrics),
    }
    path = out / "last.safetensors"
    save_weights(model, path, meta)
    with atomic_path(out / "last.state.pt") as tmp:
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp)
    (out / "last.json").write_text(json.dumps({"step": step, **metrics, "config": cfg.to_json()}, indent=1, default=str))
    return path


def _resume(model, optimizer, out: Path) -> int:
    from safetensors.torch import load_file

    weights, state = out / "last.safetensors", out / "last.state.pt"
    if not (weights.is_file() and state.is_file()):
        return 0
    model.load_state_dict(load_file(str(weights)), strict=True)
    st = torch.load(state, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(st["optimizer"])
    return int(st["step"])


def plot_log(csv_path: Path, png_path: Path) -> None:
    """Loss and IoU curves (first and last round) from the CSV log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    step = np.array([int(r["step"]) for r in rows])

    def smooth(key):
        v = np.array([float(r[key]) for r in rows])
        k = max(1, len(v) // 50)
        return np.convolve(v, np.ones(k) / k, mode="valid"), step[k - 1 :]

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("loss", "dice", "iou_mse"):
        v, s = smooth(key)
        a.plot(s, v, label=key)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_title("training loss")
    a.legend()
    for key, label in (("iou_first", "first prompt"), ("iou_last", "after the last round")):
        v, s = smooth(key)
        b.plot(s, v, label=label)
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.set_title("training mask IoU")
    b.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, resume: bool = True, quiet: bool = False, max_steps: int | None = None) -> Path:
    """Run (or resume) training; returns the path of the last checkpoint."""
    from .data import MaskSampler, read_source

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sources = [(read_source(d, cfg.base_dir), float(d.get("weight", 1.0))) for d in cfg.data]
    torch.manual_seed(cfg.seed)
    model = _build(cfg)
    sampler = MaskSampler(sources, model.img_size, cfg.masks_per_image, cfg.min_mask_area, square=model.square_input)
    groups = _param_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    start = _resume(model, optimizer, out) if resume else 0
    log_path = out / "log.csv"
    if start == 0 or not log_path.exists():
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)
    else:  # drop log rows past the checkpoint we resume from
        rows = [r for r in csv.DictReader(open(log_path)) if int(r["step"]) < start]
        with open(log_path, "w", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
    end = cfg.steps if max_steps is None else min(cfg.steps, start + max_steps)
    autocast = cfg.device.startswith("cuda")
    recent: list[dict] = []
    path = out / "last.safetensors"
    step = start
    with progress(cfg.steps, "training", quiet, start=start, info="") as advance:
        for step in range(start, end):
            t0 = time.perf_counter()
            rng = np.random.default_rng([cfg.seed, step])
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            batch = sampler.batch(cfg.batch_size, rng)
            factor = lr_factor(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * factor * g["scale"]
            images = _inputs(model, batch, cfg.device)
            gt = batch.masks.flatten(0, 1).to(cfg.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                emb, high_res = model.encode(images)
                emb = emb.repeat_interleave(cfg.masks_per_image, 0)
                if high_res is not None:  # SAM 2's 4x and 8x levels, one per mask too
                    high_res = tuple(f.repeat_interleave(cfg.masks_per_image, 0) for f in high_res)
                recipe = cfg.recipe
                if step < recipe.interactive_from_step:
                    recipe = replace(recipe, point_rounds=0, mask_only_rounds=0)
                loss, parts, round_iou = simulate(model, emb, gt, gen, recipe, grad_round_set(step, recipe, gen),
                                                  high_res)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            optimizer.step()
            dt = time.perf_counter() - t0
            row = {"step": step, "lr": cfg.lr * factor, "loss": float(loss.detach()), **parts,
                   "iou_first": round_iou[0], "iou_last": round_iou[-1],
                   "samples_per_s": len(gt) / dt}
            with open(log_path, "a", newline="") as f:
                csv.DictWriter(f, LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})
            recent = (recent + [row])[-50:]
            loss_now, iou_now = np.mean([r["loss"] for r in recent]), np.mean([r["iou_last"] for r in recent])
            advance(completed=step + 1, info=f"loss {loss_now:.3f}  IoU {iou_now:.3f}")
            if (step + 1) % cfg.save_every == 0 or step + 1 == end:
                metrics = {k: float(np.mean([r[k] for r in recent])) for k in ("loss", "iou_first", "iou_last")}
                path = save_checkpoint(model, optimizer, step + 1, cfg, out, metrics)
                plot_log(log_path, out / "curves.png")
    return path
