"""`--format html`: one self-contained page, loaded in real headless Chromium."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest

from tests.conftest import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
browser = pytest.mark.browser
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/setup-dag.sh installs it)")
# No network, no first-run chores, a throwaway profile: the page must render from the file alone.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180, check=False
        )


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (no imaging library needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def test_page_is_self_contained(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--format", "html", "--status", "-o", "dag.html")
    assert res.code == 0, res.err
    page = states_ws.read("dag.html")
    # nothing fetched: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', page)
    assert "@import" not in page and "url(http" not in page
    assert page.count("<svg") == 1 and page.count('class="node"') == 7
    assert 'data-id="evaluate[fold=1]" data-state="stale"' not in page  # no --set: train is up to date
    assert 'data-id="broken" data-state="failed"' in page
    assert "<title>broken: echo about to fail; exit 3\nfailed: failed in the last run: command exited with code 3" in page


def test_odd_names_cannot_break_the_page(odd_ws: Workspace) -> None:
    res = odd_ws.sluice("dag", "--format", "html", "-o", "dag.html")
    assert res.code == 0, res.err
    page = odd_ws.read("dag.html")
    assert "<b>x</b>" not in page.split('id="dag-data"')[0]  # escaped in the SVG
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<\\/b>" in page  # the JSON cannot close its script element


@browser
@needs_chromium
def test_rendered_in_headless_chromium(states_ws: Workspace) -> None:
    res = states_ws.sluice("dag", "--format", "html", "--status", "--set", "model.C=0.5", "-o", "dag.html")
    assert res.code == 0, res.err
    url = (states_ws.root / "dag.html").as_uri()
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'id="details" data-ready="7"' in html, "the page's script did not run"
    listed = re.findall(r'<div class="stage" data-id="([^"]+)"><h2>([^<]+)</h2>', html)
    assert sorted(h for _, h in listed) == sorted(
        ["prepare", "train", "broken", "after_broken", "evaluate[fold=0]", "evaluate[fold=1]", "evaluate[fold=2]"]
    )
    assert "stale: param model.C changed 1.0 → 0.5" in html
    shot = states_ws.root / "shot.png"
    out = chromium(f"--screenshot={shot}", url)
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1400, 900)
    # A blank or error page is one or two colours; the graph has fills, borders and text.
    assert len(set(pixels)) > 50 and len(shot.read_bytes()) > 20_000
