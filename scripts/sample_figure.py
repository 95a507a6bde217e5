"""The README's picture: every shipped sample photo with the live overlay of `meshfer video`.

Feeds: docs/images/samples.jpg (the README's picture). Each photo is run as the single frame of
its own stream (no tracking or smoothing across photos) with the default models, and drawn with the mesh
overlay: the expression and its probability bars, eye states, mouth and gaze. Prints each photo's label and what
the models said.

    python scripts/sample_figure.py [-o docs/images/samples.jpg] [--landmarker PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import cv2

    from meshfer.landmarks import LandmarkerOptions
    from meshfer.overlay import draw_overlay
    from meshfer.predict import Predictor
    from meshfer.samples import sample_images
    from meshfer.temporal import TemporalConfig
    from meshfer.video import VideoAnalyzer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/samples.jpg")
    ap.add_argument("--landmarker", default=None, help="face_landmarker.task (default: as meshfer resolves it)")
    ap.add_argument("--size", type=int, default=286, help="height of each tile in pixels")
    args = ap.parse_args()

    tiles = []
    with Predictor() as predictor:
        for path in sample_images():
            photo = cv2.imread(str(path))
            # a dark band on the left for the probability bars and one on top for the label, off the face
            frame = cv2.copyMakeBorder(photo, 36, 0, 200, 0, cv2.BORDER_CONSTANT, value=(32, 32, 32))
            with VideoAnalyzer(predictor, LandmarkerOptions(model_path=args.landmarker),
                               TemporalConfig(smoothing=1.0)) as analyzer:
                result = analyzer.process(frame, 0.0)
            draw_overlay(frame, result, analyzer.expression_labels, style="mesh")
            said = result.record.expression if result.record.face else "no face"
            print(f"{path.parent.name[5:]:<10} {path.name:<32} -> {said}")
            scale = args.size / frame.shape[0]
            tiles.append(cv2.resize(frame, (round(frame.shape[1] * scale), args.size), interpolation=cv2.INTER_AREA))
    cols = 2
    rows = [np.hstack(tiles[i:i + cols] + [np.zeros_like(tiles[0])] * (cols - len(tiles[i:i + cols])))
            for i in range(0, len(tiles), cols)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
