"""The server under load (`docs/reliability.md`): many clients uploading large photos at once into
a small memory budget (refusals, and the server's peak RSS growth over its baseline), and clicks
from one client while another's heavy everything request runs (latency beside clicks alone; how
soon the heavy work stops once its client hangs up).

    .venv/bin/python benchmarks/bench_server_load.py [--clients 40] [--megapixels 24] [--budget-mb 512]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import Machine  # noqa: E402

from promptseg import sample_image_path  # noqa: E402
from server_helpers import peak_rss_bytes, reset_peak_rss, rss_bytes, running_server  # noqa: E402


def photos(n: int, megapixels: float) -> list[bytes]:
    """n distinct JPEGs of the bundled photo scaled to `megapixels`, each tinted differently."""
    base = Image.open(sample_image_path("coffee.png")).convert("RGB")
    scale = (megapixels * 1e6 / (base.width * base.height)) ** 0.5
    big = np.asarray(base.resize((int(base.width * scale), int(base.height * scale)), Image.BILINEAR))
    out = []
    for i in range(n):
        tinted = np.clip(big.astype(np.int16) + (i * 7) % 40 - 20, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(tinted).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def upload(c: httpx.Client, data: bytes, tally: dict, lock: threading.Lock, deadline: float) -> None:
    while time.monotonic() < deadline:
        res = c.post("/v1/images", files={"file": ("p.jpg", data, "image/jpeg")})
        with lock:
            tally[res.status_code] = tally.get(res.status_code, 0) + 1
        if res.status_code != 503:
            return
        time.sleep(float(res.headers.get("retry-after", "1")) / 4)


def load(url: str, pid: int, args, images: list[bytes]) -> dict:
    with httpx.Client(base_url=url, timeout=600) as c:  # the model's working memory at this size first
        warm = c.post("/v1/images", files={"file": ("w.jpg", images[-1], "image/jpeg")}).json()
        if "id" in warm:  # else the budget cannot hold one such image: every upload gets a 413
            c.post(f"/v1/images/{warm['id']}/segment", json={"point_coords": [[10, 10]], "point_labels": [1],
                                                               "refine": "none"})
    base = rss_bytes(pid)
    reset_peak_rss(pid)
    tally: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    t0 = time.perf_counter()

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            upload(c, images[k % (len(images) - 1)], tally, lock, deadline)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    growth = peak_rss_bytes(pid) - base
    return {"clients": args.clients, "megapixels": args.megapixels, "budget_mb": args.budget_mb,
            "responses": tally, "seconds": round(time.perf_counter() - t0, 1),
            "baseline_rss_mb": round(base / 2**20), "peak_rss_growth_mb": round(growth / 2**20)}


def heavy_beside_clicks(url: str) -> dict:
    host = urlparse(url)
    with httpx.Client(base_url=url, timeout=600) as c:
        iid = c.post("/v1/images", files={"file": ("c.png", sample_image_path("coffee.png").read_bytes(),
                                                   "image/png")}).json()["id"]

        def click(x: int) -> float:
            t0 = time.perf_counter()
            c.post(f"/v1/images/{iid}/segment", json={"point_coords": [[x, 150]], "point_labels": [1],
                                                       "refine": "none"}).raise_for_status()
            return time.perf_counter() - t0

        alone = [click(200 + i) for i in range(20)]
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=600)
        body = {"points_per_side": 64, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
        conn.request("POST", f"/v1/images/{iid}/everything", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        while c.get("/healthz").json()["everything_jobs"] == 0:
            time.sleep(0.02)
        time.sleep(0.5)
        during = [click(300 + i) for i in range(20)]
        conn.sock.close()
        t0 = time.perf_counter()
        while c.get("/healthz").json()["everything_jobs"]:
            time.sleep(0.02)
        stop = time.perf_counter() - t0
    ms = [round(statistics.median(alone) * 1e3, 1), round(max(alone) * 1e3, 1),
          round(statistics.median(during) * 1e3, 1), round(max(during) * 1e3, 1)]
    return {"click_alone_median_ms": ms[0], "click_alone_max_ms": ms[1], "click_during_heavy_median_ms": ms[2],
            "click_during_heavy_max_ms": ms[3], "heavy_stopped_after_disconnect_s": round(stop, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--budget-mb", type=int, default=512)
    ap.add_argument("--images", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=600.0, help="how long clients keep retrying")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    machine = Machine.start()
    result: dict = {}
    images = photos(args.images, args.megapixels)
    with running_server("--cache-mb", str(args.budget_mb), "--max-megapixels", str(args.megapixels + 1),
                        "--web-runtime", "off", timeout=180) as (url, proc):
        result["uploads"] = load(url, proc.pid, args, images)
        result["heavy"] = heavy_beside_clicks(url)
    result["machine"] = machine.stop()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
