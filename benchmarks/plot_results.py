"""Draw the benchmark results as a bar chart (reference vs promptseg, one row per measure).

    .venv/bin/python benchmarks/plot_results.py out/bench/core.json out/bench/everything.json \\
        out/bench/memory.json -o docs/benchmarks.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REF, OURS = (150, 150, 160), (40, 110, 220)


def rows_from(docs: list[dict]) -> list[tuple[str, float, float, str]]:
    rows = []
    for doc in docs:
        if "speedup" in doc:  # bench_core
            rows.append(("image embedding, ViT-B", doc["reference"]["encoder_s"], doc["ours"]["encoder_s"], "s"))
            rows.append(("one prompt, 1500x1000", doc["reference"]["prompt_ms"], doc["ours"]["prompt_ms"], "ms"))
        elif "peak_gib" in doc:
            rows.append(
                ("everything, peak memory 4000x3000", doc["peak_gib"]["reference"], doc["peak_gib"]["ours"], "GiB")
            )
        else:  # bench_everything
            for label, row in doc.items():
                if not (isinstance(row, dict) and "reference" in row):
                    continue
                rows.append(
                    (
                        f"everything after embedding, {label}",
                        row["reference"]["after_embed_s"],
                        row["ours"]["after_embed_s"],
                        "s",
                    )
                )
    return rows


def machine_caption(docs: list[dict]) -> str:
    """The machine's condition during the first benchmark that recorded it."""
    for doc in docs:
        m = doc.get("machine")
        if m:
            b = m["before"]
            flags = [f for f, on in (("VARIED", m.get("varied")), ("BUSY", m.get("busy"))) if on]
            return (f"machine: matmul {b['matmul_gflops']:.0f} GFLOP/s, copy {b['copy_gbps']:.1f} GB/s, "
                    f"others {100 * b['others']:.0f} % [{' '.join(flags) or 'steady'}]")
    return "machine condition not recorded"


def draw(rows, path: Path, caption: str = "") -> None:
    font = ImageFont.load_default(size=15)
    width, left, bar_h, gap = 900, 300, 18, 22
    height = 75 + len(rows) * (2 * bar_h + gap)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text(
        (10, 10), "reference (grey) vs promptseg (blue), 2-core CPU, fp32 - shorter is better", fill="black", font=font
    )
    d.text((10, 30), caption, fill=(90, 90, 90), font=font)
    y = 70
    span = width - left - 150
    for label, ref, ours, unit in rows:
        d.text((10, y + bar_h // 2), label, fill="black", font=font)
        for value, color, dy in ((ref, REF, 0), (ours, OURS, bar_h + 2)):
            length = max(2, int(span * value / max(ref, ours)))
            d.rectangle([left, y + dy, left + length, y + dy + bar_h - 2], fill=color)
            d.text((left + length + 6, y + dy), f"{value:.3g} {unit}", fill="black", font=font)
        d.text((width - 70, y + bar_h // 2), f"{ref / ours:.2f}x", fill=OURS, font=font)
        y += 2 * bar_h + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="JSON files written by the benchmarks' --json")
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/benchmarks.png"))
    args = ap.parse_args()
    docs = [json.loads(p.read_text()) for p in args.results]
    draw(rows_from(docs), args.output, machine_caption(docs))
    print(args.output)


if __name__ == "__main__":
    main()
