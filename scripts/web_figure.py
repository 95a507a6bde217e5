"""The README's picture of the browser page: the page served by `meshfer web`, in headless Chromium, with
the shipped sample photos opened through its file input (the last one drawn, one row per photo).

Feeds: docs/images/web-page.jpg. Uses Debian's chromium (or $MESHFER_CHROMIUM) through Playwright and the
page's npm packages (npm ci in web/).

    python scripts/web_figure.py [-o docs/images/web-page.jpg]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def main() -> None:
    import cv2
    import numpy as np
    from playwright.sync_api import sync_playwright

    from meshfer.samples import sample_images
    from meshfer.web import PageServer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/web-page.jpg")
    args = ap.parse_args()
    photos = sorted(sample_images(), key=lambda p: p.parent.name == "face_happy")  # the smile drawn, as last
    with PageServer(0) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=os.environ.get("MESHFER_CHROMIUM") or shutil.which("chromium"),
                                     args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1180, "height": 760})
        page.goto(server.url)
        page.evaluate("window.meshfer.ready")
        page.set_input_files("#file", [str(p) for p in photos])
        for r in page.evaluate("window.meshfer.lastRun"):
            print(r["image"], r["expression"]["label"] if r["face"] else r["reason"])
        png = page.screenshot(full_page=True)
        browser.close()
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.output} ({img.shape[1]}x{img.shape[0]})")


if __name__ == "__main__":
    main()
