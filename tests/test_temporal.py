"""Temporal measures on synthetic sequences with known answers (no MediaPipe needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meshfer.temporal import (
    AttentionBox,
    BlinkCounter,
    ExponentialSmoother,
    FrameRecord,
    TemporalConfig,
    Timeline,
    attention_share,
    both_closed,
    count_blinks,
    expression_shares,
    mouth_changes,
    perclos,
    smooth,
    speaking_spans,
    summarize,
)

O, C, U = False, True, None  # open, closed, unknown (no face)


def states(text: str) -> list[bool | None]:
    """'oocco.' -> open, open, closed, closed, open, unknown."""
    return [{"o": O, "c": C, ".": U}[ch] for ch in text]


@pytest.mark.parametrize(
    "sequence, expected",
    [
        ("oooccooo", 1),
        ("oocoooccooocccoo", 3),  # three closures, each ended by >= 2 open frames
        ("oococcoo", 1),  # one open frame inside a closure is flicker, not a reopening
        ("oococoocoo", 2),
        ("ccoooccoo", 1),  # the closure at the start was never preceded by open eyes
        ("ooocccc", 0),  # never reopens
        ("oocco", 0),  # reopening not confirmed (min_open_frames=2)
        ("ooc.coo", 1),  # unknown frames are skipped
        ("oo..c..c..oo", 1),
        ("", 0),
        ("cccc", 0),
    ],
)
def test_blink_counter_known_answers(sequence: str, expected: int) -> None:
    assert len(count_blinks(states(sequence))) == expected


def test_blink_counter_min_closed_and_events() -> None:
    seq = states("oocoocccoo")
    assert len(count_blinks(seq, min_closed_frames=1)) == 2
    blinks = count_blinks(seq, min_closed_frames=2)
    assert len(blinks) == 1
    assert (blinks[0].start_frame, blinks[0].end_frame) == (5, 8)
    # min_open_frames=1: any open frame ends a closure.
    assert len(count_blinks(states("oococcoo"), min_open_frames=1)) == 2


def test_blink_counter_timestamps_and_long_closures() -> None:
    seq = states("oo" + "c" * 3 + "oo" + "c" * 20 + "oo")
    t = np.arange(len(seq)) / 10.0  # 10 fps
    counter = BlinkCounter(max_blink_s=1.0)
    events = [counter.update(s, ts) for s, ts in zip(seq, t)]
    assert counter.count == 1 and len(counter.long_closures) == 1
    blink = counter.blinks[0]
    assert blink.start_s == pytest.approx(0.2) and blink.end_s == pytest.approx(0.5)
    assert blink.duration_s == pytest.approx(0.3)
    assert counter.long_closures[0].duration_s == pytest.approx(2.0)
    # update() returns the blink on the frame that confirms the reopening (2nd open frame).
    assert [i for i, e in enumerate(events) if e is not None] == [6]


def test_blink_counter_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        BlinkCounter(min_closed_frames=0)


def test_perclos_and_both_closed() -> None:
    assert perclos(states("ooccoooooc")) == pytest.approx(0.3)
    assert perclos(states("oc..")) == pytest.approx(0.5)  # unknown frames are not counted
    assert perclos(states("...")) is None
    assert perclos([]) is None
    assert both_closed(True, True) is True
    assert both_closed(True, False) is False
    assert both_closed(None, True) is None


def test_mouth_changes_debounced() -> None:
    t = np.arange(12) / 10.0
    # A single-frame flicker (frame 3) is not a change with min_frames=2.
    seq = [False, False, True, False, True, True, True, False, False, False, False, True]  # True = open
    assert mouth_changes(seq, t, min_frames=2) == pytest.approx([0.4, 0.7])
    assert mouth_changes(seq, t, min_frames=1) == pytest.approx([0.2, 0.3, 0.4, 0.7, 1.1])


def test_speaking_spans_known_answer() -> None:
    # 10 fps: talking (the mouth alternates every 2 frames) for 1 s, silence, then a yawn
    # (open for 2 s): only the talking is speech.
    mouth = [False, False, True, True, False, False, True, True, False, False]  # 0.0-0.9 s
    mouth += [False] * 20  # 1.0-2.9 s closed
    mouth += [True] * 20  # 3.0-4.9 s open (yawn)
    mouth += [False] * 10  # 5.0-5.9 s
    t = np.arange(len(mouth)) / 10.0
    spans = speaking_spans(mouth, t, min_frames=2, max_gap_s=1.0, min_changes=3)
    assert spans == [pytest.approx((0.2, 0.8))]
    # With a tolerance of 3 s between changes, the yawn's changes join a chain of their own.
    assert speaking_spans(mouth, t, max_gap_s=3.0, min_changes=3) == [pytest.approx((0.2, 5.0))]
    assert speaking_spans([None] * 5, t[:5]) == []


def test_exponential_smoother() -> None:
    s = ExponentialSmoother(0.5)
    assert s.update([1.0, 0.0]) == pytest.approx([1.0, 0.0])
    assert s.update([0.0, 1.0]) == pytest.approx([0.5, 0.5])
    assert s.update([0.0, 1.0]) == pytest.approx([0.25, 0.75])
    assert s.update(None) is None  # no face: restart
    assert s.update([0.0, 1.0]) == pytest.approx([0.0, 1.0])
    assert ExponentialSmoother(1.0).update([0.2, 0.8]) == pytest.approx([0.2, 0.8])
    with pytest.raises(ValueError):
        ExponentialSmoother(0.0)
    values = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan], [0.0, 1.0]])
    out = smooth(values, 0.5)
    np.testing.assert_allclose(out[:2], [[1.0, 0.0], [0.5, 0.5]])
    assert np.isnan(out[2]).all()
    np.testing.assert_allclose(out[3], [0.0, 1.0])


def test_attention_box_and_share() -> None:
    box = AttentionBox.parse("0.3,0.2")
    assert (box.xmin, box.xmax, box.ymin, box.ymax) == (-0.3, 0.3, -0.2, 0.2)
    assert AttentionBox.parse("-0.1, 0.5, -0.2, 0.3") == AttentionBox(-0.1, 0.5, -0.2, 0.3)
    for bad in ("1", "a,b", "0.5,0.1,0,0"):
        with pytest.raises(ValueError):
            AttentionBox.parse(bad)
    gaze = np.array([[0.0, 0.0], [0.29, -0.19], [0.31, 0.0], [0.0, 0.5], [np.nan, np.nan]])
    assert attention_share(gaze, box) == pytest.approx(2 / 4)
    assert attention_share(np.full((3, 2), np.nan), box) is None


def test_expression_shares() -> None:
    shares = expression_shares(["happy", "happy", None, "sad", "happy"], ["happy", "neutral", "sad"])
    assert shares == {"happy": 0.75, "neutral": 0.0, "sad": 0.25}


def _timeline(eyes: str, mouth: list[bool], fps: float = 10.0) -> Timeline:
    """Frames with a face ('o'/'c' eye states for both eyes) or without one ('.')."""
    tl = Timeline()
    for i, (e, m) in enumerate(zip(eyes, mouth)):
        t = i / fps
        if e == ".":
            tl.append(FrameRecord(i, t, False))
            continue
        label = "closed" if e == "c" else "open"
        tl.append(
            FrameRecord(
                i,
                t,
                True,
                expression="happy" if i % 4 else "neutral",
                expression_probabilities={"happy": 0.6, "neutral": 0.4},
                eyes={"left": label, "right": label},
                eye_closed={"left": float(e == "c"), "right": float(e == "c")},
                gaze=(0.0, 0.0) if i % 2 else (0.9, 0.0),
                mouth="open" if m else "closed",
                mouth_open=float(m),
            )
        )
    return tl


def test_summarize_known_answers() -> None:
    eyes = "ooccoooocooooo....oooooooccccoooooooo"  # 3 blinks; 4 frames without a face
    n = len(eyes)
    mouth = [False] * n
    for i in range(2, 10):
        mouth[i] = (i // 2) % 2 == 1  # alternates every 2 frames from 0.2 s: changes at 0.2,0.4,0.6,0.8
    tl = _timeline(eyes, mouth)
    s = summarize(tl, TemporalConfig(), ["happy", "neutral", "sad"], processing_fps=50.0)
    faces = n - 4
    assert (s.frames, s.faces) == (n, faces)
    assert s.duration_s == pytest.approx(n / 10.0)
    assert s.blinks == 3 and s.blinks_left == 3 and s.blinks_right == 3
    assert s.blinks_per_minute == pytest.approx(3 / (faces * 0.1 / 60.0))
    assert s.perclos == pytest.approx(eyes.count("c") / faces)
    assert s.speaking_s == pytest.approx(0.6)
    assert s.attention == pytest.approx(sum(1 for i, e in enumerate(eyes) if e != "." and i % 2) / faces)
    happy = sum(1 for i, e in enumerate(eyes) if e != "." and i % 4)
    assert s.expression_shares == pytest.approx({"happy": happy / faces, "neutral": 1 - happy / faces, "sad": 0.0})
    text = s.format()
    for word in ("frames:", "faces found:", "blinks:", "PERCLOS:", "speaking time:", "attention:"):
        assert word in text
    json.dumps(s.to_dict())  # serialisable


def test_summarize_without_models_or_faces() -> None:
    tl = Timeline([FrameRecord(i, i / 30.0, i % 2 == 0) for i in range(10)])  # faces, but no model output
    s = summarize(tl)
    assert (s.frames, s.faces) == (10, 5)
    assert s.blinks is None and s.perclos is None and s.speaking_s is None and s.attention is None
    assert s.expression_shares == {}
    assert "n/a" in s.format()
    empty = summarize(Timeline())
    assert empty.frames == 0 and empty.duration_s == 0.0


def test_temporal_config_validation() -> None:
    with pytest.raises(ValueError):
        TemporalConfig(smoothing=0.0)
    with pytest.raises(ValueError):
        TemporalConfig(min_open_frames=0)
