"""Feature functions on hand-checkable meshes, and the mesh topology."""

from __future__ import annotations

import numpy as np
import pytest

from meshfer import features as F
from meshfer import topology as T


def flat_mesh() -> np.ndarray:
    """All points at (0.5, 0.5, 0) except the nose tip and the forehead, 0.2 apart."""
    lm = np.full((478, 3), [0.5, 0.5, 0.0], np.float32)
    lm[T.NOSE_TIP] = [0.5, 0.5, 0.0]
    lm[T.FOREHEAD] = [0.5, 0.3, 0.0]
    return lm


def test_nose_relative_and_distances_by_hand() -> None:
    lm = flat_mesh()
    lm[10] = [0.7, 0.5, 0.1]  # 0.2 right of and 0.1 behind the nose tip
    rel = F.nose_relative(lm).reshape(478, 3)
    assert np.allclose(rel[T.FOREHEAD], [0, -1, 0]) and np.allclose(rel[10], [1, 0, 0.5])
    assert np.allclose(rel[T.NOSE_TIP], 0)
    d = F.distances_to_point(lm)[0]
    assert d[T.FOREHEAD] == 0 and d[T.NOSE_TIP] == pytest.approx(1.0)
    assert d[10] == pytest.approx(np.sqrt(0.2**2 + 0.2**2 + 0.1**2) / 0.2)


def test_scale_and_translation_invariance() -> None:
    rng = np.random.default_rng(0)
    lm = rng.random((478, 3)).astype(np.float32)
    moved = lm * 0.5 + 0.1
    assert np.allclose(F.nose_relative(lm), F.nose_relative(moved), atol=1e-4)
    assert np.allclose(F.eye_features(lm), F.eye_features(moved), rtol=1e-3, atol=1e-5)


def test_isotropic_uses_the_image_aspect() -> None:
    lm = flat_mesh()
    lm[T.FOREHEAD] = [0.5, 0.4, 0.0]  # 0.1 of the height above the nose
    wide = F.distances_to_point(lm, np.array([[200, 100]]))  # height is half the width
    assert F.face_scale(F.isotropic(lm, np.array([[200, 100]])))[0] == pytest.approx(0.05)
    assert wide[0, T.NOSE_TIP] == pytest.approx(1.0)


def test_degenerate_meshes_stay_finite() -> None:
    zero = np.zeros((2, 478, 3), np.float32)
    for name in F.FEATURE_SETS:
        out = F.compute(name, zero, np.zeros((2, 52), np.float32), None)
        assert np.isfinite(out).all(), name
    nan = np.full((1, 478, 3), np.nan, np.float32)
    assert np.isnan(F.nose_relative(nan)).all()


def test_eye_area_of_a_drawn_eye() -> None:
    lm = flat_mesh()
    contour = T.eye_contour("left")
    assert len(contour) == 16 and len(set(contour)) == 16
    # the contour, in its polygon order, on an ellipse 0.1 wide and 0.04 high
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for k, i in enumerate(contour):
        lm[i] = [0.6 + 0.05 * np.cos(t[k]), 0.45 + 0.02 * np.sin(t[k]), 0]
    inscribed = 0.5 * 16 * np.sin(2 * np.pi / 16) * 0.05 * 0.02
    assert F.eye_features(lm)[0, 0, 0] == pytest.approx(inscribed / 0.2**2, rel=1e-4)
    assert F.eye_features(lm)[0, 1, 0] == 0  # the right eye is collapsed


def test_eye_ratios_of_six_points() -> None:
    lm = flat_mesh()
    p1, p2, p3, p4, p5, p6 = T.EYE_EAR_POINTS["right"]
    lm[p1], lm[p4] = [0.35, 0.45, 0], [0.45, 0.45, 0]
    lm[p2], lm[p3] = [0.38, 0.43, 0], [0.42, 0.44, 0]
    lm[p6], lm[p5] = [0.38, 0.47, 0], [0.42, 0.46, 0]
    area, ratio, ear, opening = F.eye_features(lm)[0, 1]
    height = (0.04 + 0.02) / 2
    assert ratio == pytest.approx(0.10 / height, rel=1e-5)
    assert ear == pytest.approx(height / 0.10, rel=1e-5)
    assert opening == pytest.approx(height / 0.2, rel=1e-5)
    assert np.isfinite(F.eye_features(lm)).all()  # the collapsed left eye too


def test_mouth_features_closed_and_open() -> None:
    lm = flat_mesh()
    upper, lower = T.INNER_LIPS[:11], T.INNER_LIPS[10:] + T.INNER_LIPS[:1]
    xs = np.linspace(0.45, 0.55, 11)
    for x, i in zip(xs, upper):
        lm[i] = [x, 0.7, 0]
    for x, i in zip(xs[::-1], lower):
        lm[i] = [x, 0.7, 0]
    m = F.mouth_features(lm)[0]
    assert m[0] == 0 and m[1] == 100.0 and m[2] == 0 and m[3] == 0  # closed: zero area, capped ratio
    for x, i in zip(xs, upper):
        lm[i] = [x, 0.7 - 0.02 * np.sin(np.pi * (x - 0.45) / 0.1), 0]
    for x, i in zip(xs[::-1], lower):
        lm[i] = [x, 0.7 + 0.02 * np.sin(np.pi * (x - 0.45) / 0.1), 0]
    area, ratio, opening, aspect = F.mouth_features(lm)[0]
    assert ratio == pytest.approx(0.1 / 0.04, rel=1e-4) and opening == pytest.approx(0.04 / 0.2, rel=1e-4)
    assert aspect == pytest.approx(0.04 / 0.1, rel=1e-4)
    assert area == pytest.approx(2 * 2 / np.pi * 0.1 * 0.02 / 0.2**2, rel=0.03)  # two half-sine lobes


def test_mirroring_is_an_involution_that_swaps_sides() -> None:
    perm = T.mirror_permutation()
    assert sorted(perm.tolist()) == list(range(478)) and np.array_equal(perm[perm], np.arange(478))
    assert perm[33] == 263 and perm[133] == 362 and perm[T.NOSE_TIP] == T.NOSE_TIP
    assert perm[T.RIGHT_IRIS_CENTER] == T.LEFT_IRIS_CENTER
    rng = np.random.default_rng(1)
    lm = rng.random((3, 478, 3)).astype(np.float32)
    assert np.allclose(F.mirror_landmarks(F.mirror_landmarks(lm)), lm, atol=1e-6)
    # the left eye of the mirror image is the right eye of the original
    assert np.allclose(F.eye_features(F.mirror_landmarks(lm))[:, 0], F.eye_features(lm)[:, 1], rtol=1e-4, atol=1e-6)
    bs = rng.random((2, 52)).astype(np.float32)
    from meshfer.landmarks import BLENDSHAPE_NAMES as N

    mb = F.mirror_blendshapes(bs)
    assert mb[0, N.index("eyeBlinkLeft")] == bs[0, N.index("eyeBlinkRight")]
    assert mb[0, N.index("jawLeft")] == bs[0, N.index("jawRight")]
    assert mb[0, N.index("jawOpen")] == bs[0, N.index("jawOpen")]


def test_mesh_graph() -> None:
    a = F.mesh_adjacency()
    assert a.shape == (478, 478) and np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    edges = T.mesh_edges()
    tess = T.connections("tesselation")
    n_triangles = len(tess) // 3
    n_tess_edges = len(edges) - 16  # minus the iris rings (2 x 4) and spokes (2 x 4)
    # Euler: a sphere with 4 holes (face outline, two eyes, mouth) has V - E + F = 2 - 4
    assert 468 - n_tess_edges + n_triangles == -2
    assert len(edges) == a.sum() / 2
    assert (a.sum(axis=1) > 0).all()  # every node is connected


def test_connections_match_the_installed_mediapipe() -> None:
    from meshfer.landmarks import import_mediapipe

    _, vision = import_mediapipe()
    C = vision.FaceLandmarksConnections
    for name in ("tesselation", "left_eye", "right_eye", "left_iris", "right_iris", "lips"):
        theirs = [[c.start, c.end] for c in getattr(C, "FACE_LANDMARKS_" + name.upper())]
        assert T.connections(name).tolist() == theirs, name


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="valid: .*blendshapes"):
        F.compute("nope", np.zeros((1, 478, 3)), np.zeros((1, 52)))
    with pytest.raises(KeyError, match="tesselation"):
        T.connections("nope")


def test_keypoint_distances_match_pairwise_differences() -> None:
    rng = np.random.default_rng(1)
    lm = rng.random((3, 478, 3)).astype(np.float32)
    lm[1, F.EXPRESSION_KEYPOINTS[1]] = lm[1, F.EXPRESSION_KEYPOINTS[0]] + 1e-4  # two points almost together
    sizes = np.array([[640, 480], [48, 48], [300, 400]], np.float32)
    iso = F.isotropic(lm, sizes).astype(np.float64)
    points = iso[:, list(F.EXPRESSION_KEYPOINTS)]
    i, j = np.triu_indices(len(F.EXPRESSION_KEYPOINTS), 1)
    expected = np.linalg.norm(points[:, i] - points[:, j], axis=-1) / F.face_scale(iso.astype(np.float32))[:, None]
    got = F.keypoint_distances(lm, sizes)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert got[1, 0] == pytest.approx(expected[1, 0], rel=1e-3)  # no precision lost on close points
    # The nose-tip-to-forehead pair is the scale itself: exactly 1 on every face (a constant, not noise).
    k = list(F.EXPRESSION_KEYPOINTS)
    pair = np.flatnonzero((i == min(k.index(4), k.index(151))) & (j == max(k.index(4), k.index(151))))
    assert (got[:, pair] == 1.0).all()
    assert np.isnan(F.keypoint_distances(np.full((1, 478, 3), np.nan, np.float32))).all()


def test_compute_many_equals_compute_one_by_one() -> None:
    rng = np.random.default_rng(2)
    lm = rng.random((2, 478, 3)).astype(np.float32)
    bs = rng.random((2, 52)).astype(np.float32)
    sizes = np.array([[640, 480], [48, 48]], np.float32)
    before = lm.copy()
    names = ["blendshapes_keypoints", "eye_state", "gaze_eye_region", "mouth_state", "nose_relative", "eye_state"]
    many = F.compute_many(names, lm, bs, sizes)
    assert list(many) == list(dict.fromkeys(names))
    for name in names:
        np.testing.assert_array_equal(many[name], F.compute(name, lm, bs, sizes))
    np.testing.assert_array_equal(lm, before)
    with pytest.raises(KeyError, match="valid"):
        F.compute_many(["no_such_set"], lm, bs, sizes)
