"""The weights registry: named weights of the form `architecture.weights` (as timm tags them),
each with where its file comes from and the settings chosen for it.

A name without its `.weights` part means the architecture's first row (`vit_b` is
`vit_b.sa1b`, `tiny` the bundled `tiny.synth_bsds500`). Settings tuned on particular weights
(everything mode's thresholds, the refinement of final answers) belong to those weights: the
bundled file carries its own in its metadata, and the registry row holds the same as a fallback.
No torch here: the ONNX Runtime path and the CLI's help read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUNDLED_DIR = Path(__file__).parent
META_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SETTINGS_KEY = "promptseg_settings"  # the metadata key of a weights file's settings (JSON)


@dataclass(frozen=True)
class WeightsSettings:
    """Settings chosen for one set of weights.

    `pred_iou_thresh` and `stability_score_thresh` are everything mode's filters; `refine` is
    how final answers (CLI `segment`, the API's and the page's click and box) are refined by
    default (one of promptseg.refine.REFINERS, or None)."""

    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    refine: str | None = None

    @property
    def generator_defaults(self) -> dict[str, float]:
        return {"pred_iou_thresh": self.pred_iou_thresh, "stability_score_thresh": self.stability_score_thresh}

    def to_metadata(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_metadata(cls, text: str) -> WeightsSettings:
        """Settings from a weights file's metadata; unknown keys are a ValueError."""
        try:
            values = json.loads(text)
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the weights file's {SETTINGS_KEY} metadata is not valid settings ({exc})") from None


SAM_SETTINGS = WeightsSettings()


@dataclass(frozen=True)
class WeightsEntry:
    """One row of the registry: `architecture.tag`, and either a file bundled with the package
    or a URL with the file's size and SHA-256."""

    architecture: str
    tag: str
    filename: str
    url: str | None = None  # None: bundled with the package
    size: int | None = None  # of a downloaded file; None where it is not known
    sha256: str | None = None
    settings: WeightsSettings = field(default_factory=WeightsSettings)
    description: str = ""
    # small files fetched beside the weights, into the same folder: (name, URL)
    companions: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}"

    @property
    def bundled(self) -> bool:
        return self.url is None

    def path(self, cache: Path) -> Path:
        """Where the file is: inside the package when bundled, else in the download cache."""
        return BUNDLED_DIR / self.filename if self.bundled else Path(cache) / self.filename


def _meta(arch: str, filename: str, size: int, sha256: str) -> WeightsEntry:
    return WeightsEntry(arch, "sa1b", filename, META_BASE_URL + filename, size, sha256, SAM_SETTINGS,
                        f"Meta's SAM {arch.upper().replace('_', '-')}, trained on SA-1B")


SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/"
# SAM 2's automatic mask generator's defaults (its IoU head ends in a sigmoid)
SAM2_SETTINGS = WeightsSettings(pred_iou_thresh=0.8, stability_score_thresh=0.95)
_SAM2_SIZES = {"t": ("tiny", "T"), "s": ("small", "S"), "b+": ("base_plus", "B+"), "l": ("large", "L")}


def _meta_sam2(release: str, size: str) -> WeightsEntry:
    """Meta's SAM 2 (072824) or 2.1 (092824) checkpoint of one size. Meta publishes neither
    sizes nor checksums for these files, and none could be confirmed here: the download
    checks the length the server states and prints the SHA-256 of what arrived."""
    word, letter = _SAM2_SIZES[size]
    folder = "092824/" if release == "sam2.1" else "072824/"
    filename = f"{release}_hiera_{word}.pt"
    return WeightsEntry(f"{release}_hiera_{size}", "sav", filename, SAM2_BASE_URL + folder + filename,
                        settings=SAM2_SETTINGS,
                        description=f"Meta's SAM {release[3:]} Hiera-{letter}, trained on SA-1B and SA-V")


HF_SAM_BASE_URL = "https://huggingface.co/facebook/sam-vit-{}/resolve/main/"


def _hf_sam(arch: str, word: str) -> WeightsEntry:
    """Meta's SAM in Hugging Face's format (`facebook/sam-vit-base`, ...): model.safetensors, with
    config.json and preprocessor_config.json beside it, so that the folder also loads in
    `transformers` (`SamModel.from_pretrained(folder)`). No checksum is published outside the Hub's
    pages: the download checks the length the server states and prints the SHA-256."""
    base = HF_SAM_BASE_URL.format(word)
    return WeightsEntry(arch, "hf", f"sam-vit-{word}/model.safetensors", base + "model.safetensors",
                        settings=SAM_SETTINGS,
                        description=f"Meta's SAM {arch.upper().replace('_', '-')} in Hugging Face's format",
                        companions=tuple((name, base + name) for name in ("config.json", "preprocessor_config.json")))


HQ_SAM_BASE_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"


def _hq_sam(arch: str) -> WeightsEntry:
    """HQ-SAM's checkpoint on SAM's ViT (or MobileSAM's TinyViT, `vit_tiny`), as its authors
    publish it on Hugging Face, without a checksum: the download checks the length the server
    states and prints the SHA-256 of what arrived."""
    filename = f"sam_hq_{arch}.pth"
    base = "TinyViT (MobileSAM)" if arch == "vit_tiny" else f"SAM {arch.upper().replace('_', '-')}"
    return WeightsEntry(f"{arch}_hq", "hqseg44k", filename, HQ_SAM_BASE_URL + filename, settings=SAM_SETTINGS,
                        description=f"HQ-SAM on {base}: an HQ output token trained on HQSeg-44K")


# Meta publishes no checksums; these sizes and hashes agree across independent mirrors.
REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            "tiny", "synth_bsds500", "tiny.safetensors",
            # Chosen on training data only (experiments/choose_everything_thresholds.py: best F1 of kept
            # masks on synthetic training scenes and BSDS500 training photos): its IoU head predicts low
            # values and its logits are small, so the IoU filter sits far below SAM's 0.88 and a
            # stability filter cost more found objects than it removed. Its answers refined with
            # GrabCut are much better on object photos (docs/model-card-details.md), so final answers
            # are refined by default.
            settings=WeightsSettings(pred_iou_thresh=0.5, stability_score_thresh=0.0, refine="grabcut"),
            description="promptseg's small default model, bundled (trained on synthetic scenes and BSDS500)",
        ),
        _meta("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879,
              "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
        _meta("vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607,
              "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        _meta("vit_b", "sam_vit_b_01ec64.pth", 375_042_383,
              "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        *(_meta_sam2(release, size) for release in ("sam2.1", "sam2") for size in _SAM2_SIZES),
        # MobileSAM's authors publish the file in their repository, without a checksum: the download
        # checks the length the server states and prints the SHA-256 of what arrived
        WeightsEntry("vit_t", "mobilesam", "mobile_sam.pt",
                     "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                     settings=SAM_SETTINGS,
                     description="MobileSAM: a TinyViT-5M encoder distilled from SAM ViT-H, SAM's decoder"),
        *(_hq_sam(arch) for arch in ("vit_b", "vit_l", "vit_h", "vit_tiny")),
        *(_hf_sam(arch, word) for arch, word in (("vit_b", "base"), ("vit_l", "large"), ("vit_h", "huge"))),
    )
}

DEFAULT_WEIGHTS = "tiny.synth_bsds500"


def names() -> list[str]:
    """Every name `resolve` takes: the full names, and each architecture alone."""
    return [*REGISTRY, *sorted({e.architecture for e in REGISTRY.values()})]


def resolve(name: str | None) -> WeightsEntry:
    """The registry row of `name` (`architecture.tag`, or an architecture for its first row;
    None for the default weights). Raises ValueError naming the choices."""
    if name is None:
        return REGISTRY[DEFAULT_WEIGHTS]
    if name in REGISTRY:
        return REGISTRY[name]
    for entry in REGISTRY.values():
        if entry.architecture == name:
            return entry
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(names())}")


def downloadable() -> list[str]:
    """Names of the rows fetched from a URL (`promptseg download NAME`)."""
    return [n for n, e in REGISTRY.items() if not e.bundled]
