"""meshfer web: serve the browser page (the same models, client-side) on this computer."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "web",
        parents=parents,
        help="serve the browser page: webcam or images in, the same models run client-side",
        description="Serve the browser page on 127.0.0.1 and print its URL. The page runs MediaPipe's Face "
        "Landmarker for the web and meshfer's fused ONNX graph in your browser (nothing leaves the computer): "
        "images, a video file or the webcam in; the mesh, expression, eyes, mouth, gaze, a live timeline and "
        "the temporal summary out. Needs the page's npm packages: 'npm ci' in meshfer's web/ folder. Stop "
        "with Ctrl-C.",
    )
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this computer only; another address lets other "
        "machines open the page, and browsers allow the webcam only on 127.0.0.1/localhost or HTTPS)",
    )
    p.add_argument("--root", metavar="DIR", help="the page's folder (default: $MESHFER_WEB, then meshfer's web/)")
    p.add_argument("--log", action="store_true", help="print every request on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..web import PageServer

    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.log else None
    server = PageServer(args.port, args.host, root=args.root, landmarker=args.landmarker, log=log)
    print(f"meshfer web: serving the page at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0
