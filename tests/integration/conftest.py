"""Fixtures of the HTTP API tests: a module defines `server` (a running `promptseg serve`, as
(url, process)); these give it a client and the bundled coffee photo uploaded. `browser`: the
system's Chromium, driven by Playwright, for the page's tests."""

from __future__ import annotations

import httpx
import pytest

from promptseg import sample_image_path


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def coffee_id(client):
    res = client.post("/v1/images", files={"file": ("coffee.png", sample_image_path("coffee.png").read_bytes(),
                                                    "image/png")})
    assert res.status_code == 200, res.text
    return res.json()["id"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from server_helpers import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()
