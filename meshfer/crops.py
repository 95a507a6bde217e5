"""Mesh-aligned face crops: the face turned upright and scaled to a fixed grey square.

A least-squares similarity transform (rotation, uniform scale, shift; no shear, no reflection)
maps a few rigid points of the mesh (eye corners, nose bridge, nose base) onto fixed positions of
a ``size`` x ``size`` crop, so that a face looks the same whatever its roll, distance and place
in the image. The positions are FER-2013's own median framing (measured on 700 training faces,
see ``Hybrid/crops.ipynb``), made left-right symmetric and zoomed out by 8 % so that an open jaw
stays inside: a FER-2013 image is nearly its own crop, and an ordinary photo is brought to the
same framing and resolution.

Crops are stored as uint8 (``meshfer extract`` keeps them in its output); models read them through
:func:`standardize` (per-crop zero mean, unit variance), which removes brightness and contrast.
Only NumPy and OpenCV are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CropSpec", "DEFAULT_CROP", "ANCHORS", "crop_transform", "align_crop", "align_crops", "standardize"]

#: Mesh points the alignment is fitted to: outer/inner eye corners (33, 133, 362, 263), nose
#: bridge (168, 6), nose base (2) and the nostril wings (98, 327). None of them moves much with
#: expression (mouth and brows do) and none sticks out towards the camera (the nose tip does).
ANCHORS: tuple[int, ...] = (33, 133, 362, 263, 168, 6, 2, 98, 327)

# Median positions of the anchors in FER-2013 training images (fractions of the 48x48 frame),
# symmetrised (mirror pairs averaged, midline points at x = 0.5).
_FER_FRAMING = np.array(
    [
        [0.2365, 0.379], [0.3955, 0.3915], [0.6045, 0.3915], [0.7635, 0.379],
        [0.5, 0.369], [0.5, 0.415], [0.5, 0.640], [0.404, 0.6265], [0.596, 0.6265],
    ],
    dtype=np.float64,
)
_ZOOM_OUT = 0.92


@dataclass(frozen=True)
class CropSpec:
    """How crops are made: ``size`` pixels square; ``template`` the (len(ANCHORS), 2) anchor
    positions as fractions of the crop side."""

    size: int = 48
    zoom: float = _ZOOM_OUT

    @property
    def template(self) -> np.ndarray:
        return 0.5 + self.zoom * (_FER_FRAMING - 0.5)

    def to_dict(self) -> dict[str, object]:
        return {"size": self.size, "zoom": self.zoom, "anchors": list(ANCHORS), "colour": "grey"}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "CropSpec":
        return cls(size=int(data.get("size", 48)), zoom=float(data.get("zoom", _ZOOM_OUT)))  # type: ignore[arg-type]


DEFAULT_CROP = CropSpec()


def crop_transform(landmarks: np.ndarray, image_size: tuple[int, int], spec: CropSpec = DEFAULT_CROP) -> np.ndarray:
    """The 2x3 affine matrix (a similarity) from image pixels to crop pixels for one mesh.

    ``landmarks`` are MediaPipe's normalised (478, 3) coordinates of an image of ``image_size``
    (width, height). Degenerate meshes (all anchors on one point) give a plain scaling of the
    whole image."""
    w, h = image_size
    src = np.asarray(landmarks, dtype=np.float64)[list(ANCHORS), :2] * (float(w), float(h))
    dst = spec.template * spec.size
    # Least squares for [a, -b, tx; b, a, ty]: dst = [[a, -b], [b, a]] @ src + t.
    sm, dm = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - sm, dst - dm
    norm = float((s**2).sum())
    if not np.isfinite(norm) or norm < 1e-9:
        scale = spec.size / max(w, h, 1)
        return np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    rot = np.array([[a, -b], [b, a]])
    t = dm - rot @ sm
    return np.hstack([rot, t[:, None]])


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    if image.shape[2] in (3, 4) and image.strides[2] == image.itemsize and image.strides[1] == image.shape[2] * image.itemsize:
        # rows of whole pixels (a region of a frame, say): OpenCV reads the view as it is, 3x faster
        # than a contiguous copy first; RGBA2GRAY weighs R, G, B as RGB2GRAY does
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)


def align_crop(
    image: np.ndarray, landmarks: np.ndarray, spec: CropSpec = DEFAULT_CROP, image_size: tuple[int, int] | None = None
) -> np.ndarray:
    """The (size, size) uint8 grey crop of one face.

    ``image`` is the (H, W, 3) RGB (or (H, W) grey) uint8 array the mesh was found in, at any
    resolution (``landmarks`` are normalised, so a shrunk copy of the image works too);
    ``image_size`` (width, height) is that of ``image`` by default. A face much larger than the
    crop is first shrunk with area averaging (only the region around it), so that photos are not
    aliased where FER-2013's 48x48 faces are smooth. Pixels outside the image repeat its edge."""
    import cv2

    h, w = image.shape[:2]
    if image_size is None:
        image_size = (w, h)
    m = crop_transform(landmarks, (w, h), spec)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if scale < 0.5:
        # Cut out the region the crop covers (plus a margin), shrink it by a whole factor with
        # area averaging (OpenCV's fast path, about 0.05 ms for a 300 px face) to 0.5-1x the
        # crop's scale, and warp that instead.
        k = int(1.0 / scale)
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [spec.size, 0, 1], [0, spec.size, 1], [spec.size, spec.size, 1]], float)
        pts = corners @ inv.T
        x0, y0 = np.floor(pts.min(axis=0) - 2 * k).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0) + 2 * k).astype(int)
        x0, y0 = max(0, x0), max(0, y0)
        x1 = x0 + (min(w, x1) - x0) // k * k
        y1 = y0 + (min(h, y1) - y0) // k * k
        if x1 - x0 >= 2 * k and y1 - y0 >= 2 * k:
            roi = _grey(image[y0:y1, x0:x1])
            small = cv2.resize(roi, ((x1 - x0) // k, (y1 - y0) // k), interpolation=cv2.INTER_AREA)
            # crop <- image is m; image <- small is [k 0 x0 + (k-1)/2; 0 k y0 + (k-1)/2] (pixel centres)
            c = (k - 1) / 2.0
            m = m @ np.array([[k, 0.0, x0 + c], [0.0, k, y0 + c], [0.0, 0.0, 1.0]])
            return cv2.warpAffine(small, m, (spec.size, spec.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grey = _grey(image)
    return cv2.warpAffine(grey, m, (spec.size, spec.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_crops(images: list[np.ndarray], landmarks: np.ndarray, spec: CropSpec = DEFAULT_CROP) -> np.ndarray:
    """(N, size, size) uint8 crops of N faces, one per image (``landmarks`` (N, 478, 3))."""
    out = np.zeros((len(images), spec.size, spec.size), np.uint8)
    for i, (image, lm) in enumerate(zip(images, landmarks)):
        out[i] = align_crop(image, lm, spec)
    return out


def standardize(crops: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 crops -> (N, S, S, 1) float32 with zero mean and unit variance per crop
    (a flat crop stays zero): what the hybrid models read."""
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    x = x.reshape(len(x), x.shape[1], x.shape[2])
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.maximum(std, 4.0))[..., None]
