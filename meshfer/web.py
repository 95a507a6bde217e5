"""The browser page (``web/``) and the small local server that gives it its models.

The page runs MediaPipe's Face Landmarker for the web and the fused ONNX graph of the default models
(:mod:`meshfer.models.fused`) in onnxruntime-web, both client-side. This module only serves files, on
127.0.0.1 unless told otherwise:

- the page itself (``web/*.html``, ``*.js``, ``*.css``);
- the npm packages' files the page loads (``/vendor/tasks-vision/...``, ``/vendor/ort/...``), from
  ``web/node_modules`` (``npm ci`` in ``web/`` installs them, pinned by ``web/package-lock.json``);
- ``/models/defaults.onnx`` (the shipped fused graph) and ``/models/face_landmarker.task`` (the file
  :func:`meshfer.assets.resolve_landmarker` resolves);
- ``/config.json``: what the page must do as the package does, taken from the package itself (labels,
  crop, landmarker attempts and thresholds, the temporal constants), so none of it is written twice.
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .errors import MeshferError

__all__ = ["ENV_WEB", "web_root", "page_config", "PageServer"]

#: Environment variable naming the page's folder (default: ``web/`` beside the package's source).
ENV_WEB = "MESHFER_WEB"

#: URL prefix -> folder under ``web/node_modules`` (only these npm files are served).
VENDOR = {
    "vendor/tasks-vision/": "@mediapipe/tasks-vision",
    "vendor/ort/": "onnxruntime-web/dist",
}
#: The npm files the page cannot run without (checked before serving).
REQUIRED_VENDOR = (
    "@mediapipe/tasks-vision/vision_bundle.mjs",
    "@mediapipe/tasks-vision/wasm/vision_wasm_internal.wasm",
    "onnxruntime-web/dist/ort.wasm.min.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
)
_PAGE_SUFFIXES = {".html", ".js", ".mjs", ".css", ".png", ".svg", ".ico"}
_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
          ".onnx": "application/octet-stream", ".task": "application/octet-stream", ".map": "application/json"}


def web_root(path: str | Path | None = None) -> Path:
    """The page's folder: ``path``, else ``$MESHFER_WEB``, else ``web/`` of meshfer's source checkout.
    Raises :class:`MeshferError` saying what to do when it or its npm packages are missing."""
    root = Path(path or os.environ.get(ENV_WEB) or Path(__file__).resolve().parents[1] / "web")
    if not (root / "index.html").is_file():
        raise MeshferError(f"{root}: the browser page is not there (it comes with meshfer's source checkout; "
                           f"set ${ENV_WEB} to its web/ folder)")
    missing = [f for f in REQUIRED_VENDOR if not (root / "node_modules" / f).is_file()]
    if missing:
        raise MeshferError(f"{root / 'node_modules' / missing[0]}: missing; install the page's packages with "
                           f"'npm ci' in {root}")
    return root


def page_config() -> dict[str, Any]:
    """What the page needs to know to do what the package does, from the package itself."""
    from .crops import DEFAULT_CROP
    from .landmarks import BLENDSHAPE_NAMES, IMAGE_FACES_SOUGHT, MAX_SIDE, LandmarkerOptions
    from .models.fused import fused_manifest
    from .models.registry import get_card
    from .predict import EYE_SIDES
    from .temporal import EYE_CLOSED, GAZE_RANGE, MOUTH_OPEN, TemporalConfig

    manifest = fused_manifest()
    if manifest is None:
        raise MeshferError("no fused graph of the default models to serve (python -m meshfer.models.fused builds it)")
    tasks: dict[str, Any] = {}
    for task, member in manifest["members"].items():
        card = get_card(member["name"], task)
        tasks[task] = {"model": card.name, "labels": list(card.labels), "targets": list(card.targets)}
        if card.crop:
            tasks[task]["crop"] = dict(card.crop)
    options = LandmarkerOptions()
    temporal = dataclasses.asdict(TemporalConfig())
    return {
        "graph": {"url": f"models/{manifest['file']}", "sha256": manifest["sha256"], "inputs": manifest["inputs"]},
        "landmarker": {
            "url": "models/face_landmarker.task",
            "faces_sought": IMAGE_FACES_SOUGHT,
            "max_side": MAX_SIDE,
            "min_face_detection_confidence": options.min_face_detection_confidence,
            "min_face_presence_confidence": options.min_face_presence_confidence,
            "min_tracking_confidence": options.min_tracking_confidence,
            "fallback_confidence": options.fallback_confidence,
            "attempts": [dataclasses.asdict(a) for a in options.attempts],
            "blendshapes": list(BLENDSHAPE_NAMES),
        },
        "crop": tasks.get("expression", {}).get("crop") or DEFAULT_CROP.to_dict(),
        "tasks": tasks,
        "eye_sides": list(EYE_SIDES),
        "eye_closed": EYE_CLOSED,
        "mouth_open": MOUTH_OPEN,
        "gaze_range": list(GAZE_RANGE),
        "temporal": temporal,
    }


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        # Cross-origin isolation: lets onnxruntime-web run its graph on several threads (SharedArrayBuffer).
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
        if path == "config.json":
            return self._send(self.server.config, "application/json", head)
        file = self.server.resolve(path)
        if file is None:
            return self.send_error(HTTPStatus.NOT_FOUND, "not found")
        kind = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return self._send(file.read_bytes(), kind, head)

    def _send(self, body: bytes, kind: str, head: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, models: dict[str, Path], config: dict[str, Any],
                 log: Any) -> None:
        self.root, self.models, self.log = root, models, log
        self.config = json.dumps(config).encode()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a page closed mid-download is not news
            super().handle_error(request, client_address)

    def resolve(self, path: str) -> Path | None:
        """The file a URL path names, or None (nothing outside the page, its npm files and the models)."""
        if path in ("", "index.html"):
            return self.root / "index.html"
        if path.startswith("models/"):
            return self.models.get(path[len("models/"):])
        for prefix, folder in VENDOR.items():
            if path.startswith(prefix):
                base = (self.root / "node_modules" / folder).resolve()
                return _inside(base, path[len(prefix):])
        if "/" in path or Path(path).suffix not in _PAGE_SUFFIXES:
            return None
        return _inside(self.root.resolve(), path)


def _inside(base: Path, relative: str) -> Path | None:
    file = (base / relative).resolve()
    return file if file.is_file() and file.is_relative_to(base) else None


class PageServer:
    """The page's server, in a background thread; a context manager (``with PageServer() as s:
    print(s.url)``). ``port`` 0 picks a free one. ``host`` is 127.0.0.1 unless you ask otherwise."""

    def __init__(self, port: int = 8765, host: str = "127.0.0.1", *, root: str | Path | None = None,
                 landmarker: str | Path | None = None, log: Any = None) -> None:
        from .assets import resolve_landmarker
        from .models.fused import fused_file, fused_manifest

        self.root = web_root(root)
        config = page_config()
        graph = fused_file(fused_manifest())  # checked by its SHA-256, as the Python side loads it
        models = {graph.name: graph, "face_landmarker.task": resolve_landmarker(landmarker)}
        try:
            self._server = _Server((host, port), self.root, models, config, log)
        except OSError as exc:
            raise MeshferError(f"cannot serve the page on {host}:{port} ({exc.strerror or exc})") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "PageServer":
        """Serve in a background thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="meshfer-web", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def close(self) -> None:
        """Stop serving and free the port. Safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "PageServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
