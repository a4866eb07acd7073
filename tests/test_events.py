"""Sound events from probabilities (audiokit.events): decoding checked against a frame-by-frame loop written here,
known answers on constructed probabilities, the model paths (frame output, overlapping windows) against the models'
own outputs, reading DCASE tables, and scoring against counts worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import audiokit as ak
from audiokit.events import (
    Event,
    EventSettings,
    detect_events,
    evaluate_events,
    events_from_result,
    frame_result,
    has_frame_output,
    hysteresis,
    iter_file_events,
    median_frames,
    read_events,
    render_events,
    result_frames,
)
from audiokit.inference.results import FileResult, Segment

LABELS = ["dog", "siren", "speech"]
PLAIN = EventSettings(threshold=0.5, low_threshold=None, median_filter=0.0, min_duration=0.0, min_gap=0.0)


def spans(frames: int, hop: float = 0.1) -> np.ndarray:
    start = np.arange(frames) * hop
    return np.stack([start, start + hop], axis=1)


def loop_hysteresis(probs: np.ndarray, high: np.ndarray, low: np.ndarray) -> list[tuple[int, int, int]]:
    """The double-threshold rule frame by frame: a run above low is kept when some frame in it is above high."""
    runs = []
    for c in range(probs.shape[1]):
        t = 0
        while t < probs.shape[0]:
            if probs[t, c] > low[c]:
                end = t
                while end < probs.shape[0] and probs[end, c] > low[c]:
                    end += 1
                if (probs[t:end, c] > high[c]).any():
                    runs.append((c, t, end))
                t = end
            else:
                t += 1
    return runs


def test_hysteresis_equals_a_frame_by_frame_loop():
    rng = np.random.default_rng(0)
    for trial in range(20):
        probs = rng.random((int(rng.integers(1, 200)), 4))
        high = rng.uniform(0.5, 0.95, 4)
        low = high * rng.uniform(0.3, 1.0, 4)
        assert sorted(hysteresis(probs, high, low)) == sorted(loop_hysteresis(probs, high, low)), trial
    probs = np.full((5, 2), 0.5)
    assert hysteresis(probs, np.full(2, 0.5), np.full(2, 0.5)) == []  # "above" is strict, as DCASE's pred > threshold


def test_median_frames_matches_the_published_windows():
    assert median_frames(0.45, 0.064) == 7  # DESED baseline: median_window 7 of 64 ms frames
    assert median_frames(0.45, 0.01) == 45
    assert median_frames(0.45, 0.32) == 1  # one PANNs SED segment: no smoothing
    assert median_frames(0.0, 0.1) == 1 and median_frames(1.0, 0.0) == 1
    assert all(median_frames(s, 0.02) % 2 == 1 for s in np.linspace(0.01, 2.0, 50))


def test_known_events_with_onsets_offsets_and_peaks():
    probs = np.zeros((100, 3))
    probs[10:30, 0] = 0.9  # dog 1.0-3.0 s
    probs[30:35, 0] = 0.3  # the run continues above the low threshold 0.2 up to 3.5 s
    probs[50:60, 1] = 0.4  # never above 0.5: no event
    probs[70:80, 2] = np.linspace(0.55, 0.95, 10)  # speech 7.0-8.0 s, peak 0.95
    settings = EventSettings(median_filter=0.0)
    events = detect_events(probs, spans(100), LABELS, settings)
    assert [(e.label, round(e.onset, 6), round(e.offset, 6)) for e in events] == [
        ("dog", 1.0, 3.5),
        ("speech", 7.0, 8.0),
    ]
    assert events[0].score == pytest.approx(0.9) and events[1].score == pytest.approx(0.95)
    plain = detect_events(probs, spans(100), LABELS, PLAIN)
    assert [(e.label, round(e.onset, 6), round(e.offset, 6)) for e in plain] == [
        ("dog", 1.0, 3.0),
        ("speech", 7.0, 8.0),
    ]
    lowered = EventSettings(median_filter=0.0, class_thresholds={"siren": 0.35})
    assert [e.label for e in detect_events(probs, spans(100), LABELS, lowered)] == ["dog", "siren", "speech"]
    # Torch input and a duration that cuts the last event.
    cut = detect_events(torch.from_numpy(probs), torch.from_numpy(spans(100)), LABELS, settings, duration=7.5)
    assert cut[-1].offset == pytest.approx(7.5)


def test_median_filter_removes_spikes_and_equals_a_sliding_median():
    rng = np.random.default_rng(1)
    probs = rng.random((60, 3)) * 0.3
    probs[20, 0] = 0.99  # one frame: gone after a 5-frame median
    probs[40:50, 1] = 0.9
    settings = EventSettings(low_threshold=None, median_filter=0.5, min_duration=0.0, min_gap=0.0)
    events = detect_events(probs, spans(60), LABELS, settings)
    assert [(e.label, round(e.onset, 6), round(e.offset, 6)) for e in events] == [("siren", 4.0, 5.0)]
    # The smoothing is a 5-frame running median with the edges mirrored (x[2] x[1] | x[0] x[1] ...)
    padded = np.pad(probs, ((2, 2), (0, 0)), mode="symmetric")
    smooth = np.stack([np.median(padded[t : t + 5], axis=0) for t in range(60)])
    expect = [
        (LABELS[c], round(s * 0.1, 6), round(e * 0.1, 6)) for c, s, e in loop_hysteresis(smooth, *[np.full(3, 0.5)] * 2)
    ]
    assert sorted((e.label, round(e.onset, 6), round(e.offset, 6)) for e in events) == sorted(expect)


def test_gaps_merge_and_short_events_drop():
    probs = np.zeros((100, 3))
    probs[10:20, 0] = 0.9
    probs[21:30, 0] = 0.8  # 0.1 s gap: not less than min_gap 0.1, stays apart...
    probs[60:70, 0] = 0.9
    probs[72:80, 0] = 0.7  # ...0.2 s gap merges at min_gap 0.25
    probs[90, 2] = 0.9  # 0.1 s long
    base = dict(low_threshold=None, median_filter=0.0)
    apart = detect_events(probs, spans(100), LABELS, EventSettings(**base, min_gap=0.1, min_duration=0.1))
    assert [(e.label, round(e.onset, 6), round(e.offset, 6)) for e in apart] == [
        ("dog", 1.0, 2.0), ("dog", 2.1, 3.0), ("dog", 6.0, 7.0), ("dog", 7.2, 8.0), ("speech", 9.0, 9.1)
    ]  # fmt: skip
    merged = detect_events(probs, spans(100), LABELS, EventSettings(**base, min_gap=0.25, min_duration=0.15))
    assert [(e.label, round(e.onset, 6), round(e.offset, 6), e.score) for e in merged] == [
        ("dog", 1.0, 3.0, 0.9), ("dog", 6.0, 8.0, 0.9)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"low_threshold": 0.7}, "low_threshold 0.7 is above threshold 0.5"),
        ({"median_filter": -1.0}, "median_filter must be >= 0"),
        ({"class_thresholds": {"dog": "high"}}, "class_thresholds: 'dog'='high'"),
    ],
)
def test_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EventSettings(**kwargs)


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="labels the model does not have: 'cat'"):
        detect_events(np.zeros((4, 3)), spans(4), LABELS, EventSettings(class_thresholds={"cat": 0.3}))
    with pytest.raises(ValueError, match="NaN"):
        detect_events(np.full((4, 3), np.nan), spans(4), LABELS)
    with pytest.raises(ValueError, match=r"3 classes of probabilities but 2 label names"):
        detect_events(np.zeros((4, 3)), spans(4), LABELS[:2])
    with pytest.raises(ValueError, match="times"):
        detect_events(np.zeros((4, 3)), spans(5), LABELS)
    assert detect_events(np.zeros((0, 3)), np.zeros((0, 2)), LABELS) == []


def test_windowed_results_place_scores_at_window_centres():
    result = FileResult(path="a.wav", duration=3.0, segments=[
        Segment(0.0, 2.0, np.array([0.9, 0.0, 0.0])), Segment(0.5, 2.5, np.array([0.9, 0.0, 0.0])),
        Segment(1.0, 3.0, np.array([0.1, 0.0, 0.0])),
    ])  # fmt: skip
    probs, times = result_frames(result)
    np.testing.assert_allclose(times, [[0.0, 1.25], [1.25, 1.75], [1.75, 3.0]])
    np.testing.assert_allclose(probs[:, 0], [0.9, 0.9, 0.1])
    events = events_from_result(result, LABELS, PLAIN)
    assert events == [Event("dog", 0.0, 1.75, 0.9)]
    whole = FileResult(path="b.wav", duration=4.0, values=np.array([0.0, 0.8, 0.0]))
    assert events_from_result(whole, LABELS, PLAIN) == [Event("siren", 0.0, 4.0, 0.8)]
    assert events_from_result(FileResult(path="c.wav", error="c.wav: empty"), LABELS) == []


def _sed_model(tmp_path):
    from tests.test_panns_sed import NARROW, _load, make_signal

    wave = make_signal(32000, 32000)
    model, _ = _load(tmp_path, NARROW, wave)
    model.reset_classifier(3, label_names=LABELS)
    torch.manual_seed(0)
    with torch.no_grad():
        model.get_classifier().weight.mul_(20.0)  # scores spread over (0, 1), so that thresholds cut somewhere
    return model.eval()


def test_frame_output_model_events_come_from_its_segments(tmp_path, make_wav):
    model = _sed_model(tmp_path)
    assert has_frame_output(model) and not has_frame_output(ak.create_model("efficientat_mn01.audioset"))
    path = make_wav("long.wav", 25.0, rate=32000, kind="noise")
    wave = ak.load_audio(path, sample_rate=32000).reshape(-1)
    result = frame_result(path, model, window=10.0, hop=10.0)
    # As tag windows a file: the last window ends at the file's end, overlapping the one before.
    assert result.ok and [(s.start, s.end) for s in result.segments] == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    with torch.no_grad():
        pieces = [model.predict_frames(wave[s * 32000 : (s + 10) * 32000][None]) for s in (0, 10, 15)]
    for seg, piece in zip(result.segments, pieces):
        np.testing.assert_allclose(seg.values, piece.probabilities[0].numpy(), atol=1e-6)
    # Stitched: where windows overlap (15-20 s), each frame from the window whose centre (15 s, 20 s) is nearer.
    probs, times = result_frames(result, model)
    parts = []
    for piece, start, lo, hi in zip(pieces, (0, 10, 15), (0.0, 10.0, 17.5), (10.0, 17.5, 25.0)):
        t = piece.times.numpy() + start
        keep = (t.mean(axis=1) >= lo) & (t.mean(axis=1) < hi)
        parts.append((piece.probabilities[0].numpy()[keep], t[keep]))
    np.testing.assert_allclose(probs, np.concatenate([p for p, _ in parts]), atol=1e-6)
    np.testing.assert_allclose(times, np.concatenate([t for _, t in parts]), atol=1e-9)
    assert np.all(np.diff(times[:, 0]) > 0) and times[-1, 1] == pytest.approx(25.0)
    settings = EventSettings(threshold=float(np.quantile(probs, 0.8)), low_threshold=None)
    events = events_from_result(result, LABELS, settings, model)
    assert events == detect_events(probs, times, LABELS, settings, duration=25.0) and events
    streamed = list(iter_file_events([path], model, settings, window=10.0, hop=10.0))
    assert streamed[0][1] == events


def test_models_without_frames_are_tagged_in_overlapping_windows(tmp_path, make_wav):
    from tests.conftest import informative_model

    model = informative_model("efficientat_mn01.audioset")
    path = make_wav("clip.wav", 4.0, rate=32000, kind="noise")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF junk")
    settings = EventSettings(threshold=0.0, low_threshold=None, median_filter=0.0, min_gap=0.0, min_duration=0.0)
    (result, events), (failed, none) = iter_file_events([path, bad], model, settings, num_workers=0)
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0), (1.5, 3.5), (2.0, 4.0)]
    wave = ak.load_audio(path, sample_rate=32000).reshape(-1)
    with torch.no_grad():
        scores = model.predict_proba(torch.stack([wave[int(s * 32000) : int(s * 32000) + 64000] for s in
                                                  (0.0, 0.5, 1.0, 1.5, 2.0)]))  # fmt: skip
    np.testing.assert_allclose(np.stack([s.values for s in result.segments]), scores.numpy(), atol=1e-5)
    assert len(events) == model.num_classes  # every class is above 0 in every window: one event each, the whole file
    assert all((e.onset, e.offset) == (0.0, 4.0) for e in events)
    assert not failed.ok and "bad.wav" in failed.error and none == []


def test_render_and_read_back(tmp_path):
    ok = FileResult(path="/data/a.wav", duration=5.0)
    failed = FileResult(path="/data/b.wav", error="/data/b.wav: empty file")
    files = [(ok, [Event("dog", 1.0, 2.5, 0.91), Event("siren", 3.0, 4.0, 0.7)]), (failed, [])]
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"events.{fmt}"
        out.write_text("".join(render_events(files, fmt)))
        back = read_events(out)
        assert back == {"a.wav": [(1.0, 2.5, "dog"), (3.0, 4.0, "siren")], "b.wav": []}, fmt
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"path": "/data/a.wav", "label": "dog", "onset": 1.0, "offset": 2.5, "score": 0.91}
    table = "".join(render_events(files, "table"))
    assert "1.00 -      2.50  0.91  dog" in table and "ERROR /data/b.wav: empty file" in table
    with pytest.raises(ValueError, match="jsonl, csv or table"):
        list(render_events(files, "xml"))


def test_read_dcase_tables_and_refuse_bad_rows(tmp_path):
    dcase = tmp_path / "ref.tsv"
    dcase.write_text(
        "filename\tonset\toffset\tevent_label\nY1.wav\t0.5\t2.0\tDog\nY1.wav\t3\t4\tSpeech\nY2.wav\t\t\t\n"
    )
    assert read_events(dcase) == {"Y1.wav": [(0.5, 2.0, "Dog"), (3.0, 4.0, "Speech")], "Y2.wav": []}
    cases = {
        "filename\tonset\toffset\tevent_label\nY1.wav\tx\t2\tDog\n": "needs numeric onset and offset",
        "filename\tonset\toffset\tevent_label\nY1.wav\t3\t2\tDog\n": "onset 3.0 / offset 2.0 is no event",
        "name\tonset\toffset\tevent_label\nY1.wav\t1\t2\tDog\n": "no filename/path column",
        '{"path": "a.wav"}\n{"path": \n': r"events.bad:2: not a JSON object",
    }
    for text, message in cases.items():
        bad = tmp_path / "events.bad"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_events(bad)
    with pytest.raises(ValueError, match=r"missing\.tsv"):
        read_events(tmp_path / "missing.tsv")


def test_scores_against_hand_counts():
    pytest.importorskip("sed_scores_eval", reason="sed_scores_eval is in the events and dev extras")
    reference = {
        "a.wav": [(1.0, 3.0, "dog"), (5.0, 6.0, "siren")],
        "b.wav": [(0.0, 2.0, "dog")],
    }
    predicted = {
        "a.wav": [(1.1, 3.2, "dog"), (8.0, 9.0, "siren")],  # a hit inside the collars; a false alarm
        "b.wav": [(0.0, 2.0, "dog"), (4.0, 5.0, "bird")],  # a hit; a class the reference lacks
    }
    durations = {"a.wav": 10.0, "b.wav": 10.0}
    metrics = evaluate_events(predicted, reference, durations)
    # dog: 2 hits of 2 predicted, 2 reference; siren: 0 of 1 predicted, 1 reference.
    assert metrics["classes"] == ["dog", "siren"] and metrics["unscored_events"] == 1
    micro = metrics["event_f1"]["micro"]
    assert micro["precision"] == pytest.approx(2 / 3) and micro["recall"] == pytest.approx(2 / 3)
    assert micro["f1"] == pytest.approx(2 / 3)
    per_class = metrics["event_f1"]["per_class"]
    assert per_class["dog"]["f1"] == pytest.approx(1.0) and per_class["siren"]["f1"] == pytest.approx(0.0)
    assert metrics["event_f1"]["macro"]["f1"] == pytest.approx(0.5)
    # Segments of 1 s: dog reference [1,3) in a and [0,2) in b = 4 segments; predicted 1.1-3.2 covers [1,4) in a
    # (3 segments, one false) and [0,2) in b. Siren: reference [5,6), predicted [8,9): one miss, one false alarm.
    seg = metrics["segment_f1"]["per_class"]
    assert seg["dog"]["precision"] == pytest.approx(4 / 5) and seg["dog"]["recall"] == pytest.approx(1.0)
    assert seg["siren"]["f1"] == pytest.approx(0.0)
    # A collar too narrow for the 0.2 s late offset turns the dog hit in a.wav into a miss and a false alarm.
    strict = evaluate_events(predicted, reference, durations, collar=0.05, offset_collar_rate=0.0)
    assert strict["event_f1"]["per_class"]["dog"]["f1"] == pytest.approx(0.5)
    perfect = evaluate_events(reference, reference, durations)
    assert perfect["psds"] == pytest.approx(1.0) and perfect["event_f1"]["micro"]["f1"] == pytest.approx(1.0)
    # PSDS: per class the area under the TPR-eFPR curve up to max_efpr (one step here: dog reaches TPR 1 at eFPR 0,
    # siren never detects), averaged over classes less alpha_st times their spread: 0.5 - 1 * 0.5, or 0.5 without.
    assert metrics["psds"] == pytest.approx(0.0, abs=1e-9)
    assert evaluate_events(predicted, reference, durations, alpha_st=0.0)["psds"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"files the reference does not list: c\.wav"):
        evaluate_events({"c.wav": []}, reference, durations)
    with pytest.raises(ValueError, match="no events"):
        evaluate_events({}, {"a.wav": []}, durations)


# -- the command line --------------------------------------------------------------------------------------------------
def test_tag_events_command(tmp_path, make_wav, capsys):
    from audiokit.cli import main

    model = _sed_model(tmp_path)
    model.save_pretrained(tmp_path / "sed")
    saved = f"local-dir:{tmp_path / 'sed'}"
    good = make_wav("street.wav", 12.0, rate=32000, kind="noise")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00")
    probs, _ = result_frames(frame_result(good, model), model)
    threshold = float(np.quantile(probs, 0.7))
    settings = EventSettings(threshold=threshold, low_threshold=None, median_filter=0.0)
    ((_, expect),) = iter_file_events([good], model, settings)
    assert expect

    out = tmp_path / "events.jsonl"
    args = ["tag", str(good), str(bad), "--model", saved, "--events", "--threshold", str(threshold), "--no-hysteresis",
            "--median-filter", "0", "--format", "jsonl", "-o", str(out), "-q"]  # fmt: skip
    assert main(args) == 1  # the broken file is reported and the run goes on
    err = capsys.readouterr().err
    assert "broken.wav" in err and "1 of 2 file(s) failed" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[-1]["path"] == str(bad) and "error" in rows[-1]
    got = [(r["label"], r["onset"], r["offset"], r["score"]) for r in rows[:-1]]
    assert got == [(e.label, round(e.onset, 6), round(e.offset, 6), round(e.score, 6)) for e in expect]
    assert all(r["path"] == str(good) for r in rows[:-1])

    csv_out = tmp_path / "events.csv"
    assert main([*args[:-5], "--format", "csv", "-o", str(csv_out), "-q"]) == 1
    capsys.readouterr()
    assert read_events(csv_out) == read_events(out)

    for extra, message in [
        (["--format", "json"], "use --format table, jsonl or csv"),
        (["--class-thresholds", "cat=0.3"], "'cat'"),
        (["--class-thresholds", "dog"], "LABEL=VALUE"),
        (["--low-threshold", "0.9", "--threshold", "0.5"], "low_threshold 0.9 is above threshold 0.5"),
        (["--resume", "-o", str(tmp_path / "r.jsonl"), "--format", "jsonl"], "--events does not combine with --resume"),
    ]:
        assert main(["tag", str(good), "--model", saved, "--events", "-q", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra


def test_evaluate_events_command(tmp_path, capsys):
    pytest.importorskip("sed_scores_eval", reason="sed_scores_eval is in the events and dev extras")
    from audiokit.cli import main

    reference = tmp_path / "ref.tsv"
    reference.write_text("filename\tonset\toffset\tevent_label\na.wav\t1.0\t3.0\tdog\na.wav\t5\t6\tsiren\n"
                         "b.wav\t0\t2\tdog\n")  # fmt: skip
    predicted = tmp_path / "pred.jsonl"
    predicted.write_text("".join(json.dumps(r) + "\n" for r in [
        {"path": "/x/a.wav", "label": "dog", "onset": 1.1, "offset": 3.2, "score": 0.9},
        {"path": "/x/a.wav", "label": "siren", "onset": 8.0, "offset": 9.0, "score": 0.8},
        {"path": "/x/b.wav", "label": "dog", "onset": 0.0, "offset": 2.0, "score": 0.7},
    ]))  # fmt: skip
    durations = tmp_path / "durations.tsv"
    durations.write_text("filename\tduration\na.wav\t10\nb.wav\t10.0\n")
    out = tmp_path / "metrics.json"
    assert main(["evaluate-events", str(predicted), str(reference), "--durations", str(durations), "-o", str(out)]) == 0
    saved = json.loads(out.read_text())
    direct = evaluate_events(read_events(predicted), read_events(reference), {"a.wav": 10.0, "b.wav": 10.0})
    assert saved["event_f1"] == direct["event_f1"] and saved["psds"] == direct["psds"]
    assert json.loads(capsys.readouterr().out)["event_f1"] == pytest.approx(2 / 3)

    durations.write_text("filename\tduration\na.wav\t10\n")
    assert main(["evaluate-events", str(predicted), str(reference), "--durations", str(durations)]) == 2
    assert "lacks 1 reference file(s): b.wav" in capsys.readouterr().err
    durations.write_text("filename\tduration\na.wav\tlong\n")
    assert main(["evaluate-events", str(predicted), str(reference), "--durations", str(durations)]) == 2
    assert "positive duration" in capsys.readouterr().err
    assert main(["evaluate-events", str(tmp_path / "none.jsonl"), str(reference)]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_events_of_a_constructed_recording_through_the_released_model(tmp_path):
    # Spoken digits from 2 to 6 s and a 1 kHz tone from 10 to 13 s in near-silence, tagged by the released EfficientAT
    # mn04 in 1 s windows every 0.25 s: one Speech and one Sine wave event, each within half a window of the truth
    # (a window's scores sit at its centre), and nothing in the silence around them.
    from tests.conftest import FSDD, MN04_CHECKPOINT, require_shared

    model = ak.create_model("efficientat_mn04.audioset", checkpoint_path=require_shared(MN04_CHECKPOINT)).eval()
    rate = 32000
    digits = [
        ak.load_audio(p, sample_rate=rate).reshape(-1).numpy()
        for p in sorted(require_shared(FSDD).glob("*_jackson_*.wav"))[:12]
    ]
    speech = np.concatenate(digits)[: 4 * rate]
    signal = 1e-4 * np.random.default_rng(0).standard_normal(16 * rate).astype(np.float32)
    signal[2 * rate : 6 * rate] += 0.5 * speech / np.abs(speech).max()
    signal[10 * rate : 13 * rate] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(3 * rate) / rate).astype(np.float32)
    path = tmp_path / "scene.wav"
    sf.write(path, signal, rate)
    ((result, events),) = iter_file_events([path], model, EventSettings(), window=1.0, hop=0.25, num_workers=0)
    assert result.ok
    truth = {"Speech": (2.0, 6.0), "Sine wave": (10.0, 13.0)}
    for label, (onset, offset) in truth.items():
        (event,) = [e for e in events if e.label == label]
        assert abs(event.onset - onset) <= 0.5 and abs(event.offset - offset) <= 0.5, event
    for event in events:  # "Beep, bleep" may join the tone; nothing may start or end in the silence
        assert any(on - 0.5 <= event.onset and event.offset <= off + 0.5 for on, off in truth.values()), event
