"""Click latency through the HTTP API: a `promptseg serve` process on 127.0.0.1, one photo
uploaded (embedded once), then single clicks as the web page sends them; beside the same click
through the Predictor in this process, on the same model and photo. Then, in the web page in
headless Chromium, the click as the page sees it (prompt to decoded masks): through the server,
and decoded in the page with onnxruntime-web, interleaved.

    .venv/bin/python benchmarks/bench_server.py [--clicks 50] [--size 1500x1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from calibration import Machine  # noqa: E402

from promptseg import Predictor, default_model, read_image, sample_image_path  # noqa: E402
from promptseg.server import ort_web  # noqa: E402
from server_helpers import running_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=int, default=50)
    ap.add_argument("--size", default="1500x1000")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    photo = np.asarray(Image.fromarray(read_image(sample_image_path("coffee.png"))).resize((w, h), Image.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    rng = np.random.default_rng(0)
    clicks = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], (args.clicks, 2))

    machine = Machine.start()
    pred = Predictor(default_model())
    pred.set_image(photo)
    direct = []
    for x, y in clicks:
        t0 = time.perf_counter()
        pred.predict(np.array([[x, y]]), np.array([1]))
        direct.append(time.perf_counter() - t0)

    runtime = ort_web.find()
    with running_server("--web-runtime", str(runtime) if runtime else "off") as (url, _), \
            httpx.Client(base_url=url, timeout=120) as c:
        t0 = time.perf_counter()
        image_id = c.post("/v1/images", files={"file": ("photo.png", buf.getvalue(), "image/png")}).json()["id"]
        upload = time.perf_counter() - t0
        http = []
        for x, y in clicks:
            body = {"point_coords": [[x, y]], "point_labels": [1], "multimask_output": True, "mask_format": "rle"}
            t0 = time.perf_counter()
            res = c.post(f"/v1/images/{image_id}/segment", json=body)
            http.append(time.perf_counter() - t0)
            assert res.status_code == 200, res.text
        page_times = in_page(url, buf.getvalue(), clicks[: args.clicks // 2]) if runtime else None

    out = {"size": args.size, "upload_and_embed_s": upload, "click_http_median_s": statistics.median(http),
           "click_http_p90_s": float(np.percentile(http, 90)), "click_predictor_median_s": statistics.median(direct)}
    print(f"{w}x{h} photo, default model: upload + embed {upload * 1000:.0f} ms; one click (3 masks as RLE) "
          f"over HTTP median {out['click_http_median_s'] * 1000:.1f} ms (p90 {out['click_http_p90_s'] * 1000:.1f}) "
          f"vs Predictor.predict in process {out['click_predictor_median_s'] * 1000:.1f} ms")
    if page_times:
        server_ms, local_ms = (statistics.median(page_times[k]) for k in ("server", "browser"))
        out.update(page_click_server_median_ms=server_ms, page_click_browser_median_ms=local_ms)
        print(f"in the page (Chromium, prompt to decoded masks, median of {len(page_times['server'])}): through "
              f"the server {server_ms:.1f} ms, decoded in the page (onnxruntime-web) {local_ms:.1f} ms "
              f"({server_ms / local_ms:.2f}x)")
    else:
        print("in-page figures skipped: run `promptseg install-web-runtime` first")
    out["machine"] = machine.stop()
    print(machine.line())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


def in_page(url: str, png: bytes, clicks: np.ndarray) -> dict[str, list[float]]:
    """Time the page's own `segment` for each click, alternating the server and the page's decoder."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from server_helpers import CHROMIUM_ARGS, chromium_path

    times: dict[str, list[float]] = {"server": [], "browser": []}
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.png"
        photo.write_bytes(png)
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("() => !document.getElementById('local-group').hidden", timeout=30000)
        page.set_input_files("#file", str(photo))
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=60000)
        timed = """async ([x, y, local]) => {
            document.getElementById('local').checked = local;
            const t0 = performance.now();
            await segment({ point_coords: [[x, y]], point_labels: [1], multimask_output: true, mask_format: 'rle' });
            return performance.now() - t0; }"""
        page.evaluate(timed, [10, 10, True])  # loads the runtime, the decoder and the embedding once
        for x, y in clicks:
            for mode in ("server", "browser"):
                times[mode].append(page.evaluate(timed, [float(x), float(y), mode == "browser"]))
        browser.close()
    return times


if __name__ == "__main__":
    main()
