"""Compute meshfer/data/mirror.json: the landmark permutation of a mirrored face.

Feeds: meshfer/data/mirror.json (no doc table; docs/features.md describes mirroring).

Usage: python scripts/make_mirror.py MESHES.npz   (a file written by `meshfer extract`)

The mean of many frontal meshes (aligned by 3-D Procrustes) is reflected in its symmetry plane
(refined by ICP) and each point is matched to its mirror partner by an optimal assignment. The
result is checked: an involution that maps mesh edges onto mesh edges.
"""

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from meshfer.features import isotropic
from meshfer.meshtable import MeshTable
from meshfer.topology import mesh_edges


MIDLINE = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152, 164, 168, 175, 195, 197, 199, 200]


def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R minimising |a R - b| for centred point sets."""
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1, 1, d]) @ vt


def main() -> None:
    table = MeshTable.load(sys.argv[1]).faces()
    lm = isotropic(table.landmarks, table.image_sizes).astype(np.float64)
    lm -= lm.mean(axis=1, keepdims=True)
    lm /= np.linalg.norm(lm, axis=(1, 2), keepdims=True)
    ref = lm[0]
    for _ in range(3):
        aligned = np.stack([m @ kabsch(m, ref) for m in lm])
        ref = aligned.mean(0)
        ref /= np.linalg.norm(ref)
    # Reflect in the plane through the midline points (nose, forehead, lips, chin).
    mid = ref[MIDLINE] - ref[MIDLINE].mean(0)
    normal = np.linalg.svd(mid)[2][-1]
    centre = ref[MIDLINE].mean(0)
    mirrored = ref - 2.0 * np.outer((ref - centre) @ normal, normal)
    _, perm = linear_sum_assignment(cdist(ref, mirrored))
    print(f"mean mirror mismatch: {np.linalg.norm(ref - mirrored[perm], axis=1).mean() / np.linalg.norm(ref, axis=1).mean():.4f}")
    assert np.array_equal(perm[perm], np.arange(len(perm))), "not an involution"
    edges = {tuple(e) for e in mesh_edges().tolist()}
    mapped = {tuple(sorted((int(perm[a]), int(perm[b])))) for a, b in edges}
    share = len(mapped & edges) / len(edges)
    print(f"fixed points: {(perm == np.arange(len(perm))).sum()}, edges preserved: {share:.4f}")
    assert share > 0.99, share
    out = Path(__file__).resolve().parents[1] / "meshfer" / "data" / "mirror.json"
    out.write_text(json.dumps({"source": f"scripts/make_mirror.py on {len(lm)} meshes", "permutation": perm.tolist()}))
    print("wrote", out)


if __name__ == "__main__":
    main()
