"""The training data the scripts here tune and measure on by default, and their refusal of the
evaluation data (../shared/eval-data is for evaluation only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = [ROOT / "out/data/synth-train", ROOT.parent / "shared/train-data/bsds500"]


def add_sources_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sources", nargs="+", type=Path, default=DEFAULT_SOURCES, help="SA-1B folders of training data.")


def refuse_eval_data(sources: list[Path], doing: str) -> None:
    """Exit with a message if any source lies in an eval-data folder."""
    for src in sources:
        if "eval-data" in src.resolve().parts:
            sys.exit(f"{src}: eval-data is for evaluation only; {doing} on training data")
