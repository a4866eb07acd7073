"""`audiokit tag FILE --plot out.png` and audiokit.plot: what is drawn is the file's spectrogram, the model's
probabilities at their times and the detected events, for a 10 s clip and for a long recording alike."""

from __future__ import annotations

import librosa
import matplotlib.image
import numpy as np
import torch

import audiokit as ak
from audiokit.events import EventSettings, frame_result, iter_file_events, result_frames
from audiokit.plot import MAX_COLUMNS, plot_file, spectrogram_image
from tests.test_events import LABELS, _sed_model


def test_spectrogram_columns_are_bounded_and_a_tone_lands_in_its_band():
    rate = 16000
    t = torch.arange(10 * rate) / rate
    image, seconds = spectrogram_image(torch.sin(2 * torch.pi * 1000 * t), rate)
    assert image.shape == (64, 1001) and seconds == 0.01  # 10 ms columns, centred: one at 0 s and one at 10 s
    # torchaudio's mel scale is HTK's: the loudest band is the one whose centre is nearest 1 kHz.
    centres = librosa.mel_frequencies(n_mels=66, fmin=0.0, fmax=rate / 2, htk=True)[1:-1]
    assert int(np.argmax(image.mean(axis=1))) == int(np.argmin(np.abs(centres - 1000)))
    hour = torch.zeros(3600 * 8000)
    hour[1800 * 8000 : 1801 * 8000] = 0.5  # one loud second in the middle of an hour
    image, seconds = spectrogram_image(hour, 8000)
    assert image.shape[1] <= MAX_COLUMNS and image.shape[1] * seconds >= 3599
    loud = np.nonzero(image.mean(axis=0) > image.mean(axis=0).min() + 20)[0] * seconds
    assert loud.min() >= 1798 and loud.max() <= 1802


def test_the_picture_holds_the_probabilities_and_events(tmp_path, make_wav):
    model = _sed_model(tmp_path)
    path = make_wav("street.wav", 12.0, rate=32000, kind="noise")
    result = frame_result(path, model)
    probs, times = result_frames(result, model)
    settings = EventSettings(threshold=float(np.quantile(probs, 0.7)), low_threshold=None, median_filter=0.0)
    ((_, events),) = iter_file_events([path], model, settings)
    assert events
    wave = ak.load_audio(path, sample_rate=32000)
    fig = plot_file(wave, 32000, probs, times, LABELS, events, top=2)
    ax_spec, ax_probs, ax_events = fig.axes[:3]
    np.testing.assert_allclose(ax_spec.images[0].get_array(), spectrogram_image(wave, 32000)[0])
    shown = [t.get_text() for t in ax_probs.get_yticklabels()]
    order = list(np.argsort(-probs.max(axis=0), kind="stable"))
    expected = [LABELS[i] for i in order[:2]] + [e.label for e in events if e.label not in
                                                  [LABELS[i] for i in order[:2]]]  # fmt: skip
    assert shown == list(dict.fromkeys(expected))
    heat = ax_probs.collections[0].get_array().reshape(len(shown), -1)
    np.testing.assert_allclose(heat, probs[:, [LABELS.index(n) for n in shown]].T)
    bars = [(b.get_paths()[0].get_extents().x0, b.get_paths()[0].get_extents().x1) for b in ax_events.collections]
    np.testing.assert_allclose(sorted(bars), sorted((e.onset, e.offset) for e in events), atol=1e-6)
    assert ax_events.get_xlim() == (0.0, 12.0)


def test_plot_command(tmp_path, make_wav, capsys):
    from audiokit.cli import main

    model = _sed_model(tmp_path)
    model.save_pretrained(tmp_path / "sed")
    path = make_wav("street.wav", 12.0, rate=32000, kind="noise")
    png = tmp_path / "street.png"
    assert main(["tag", str(path), "--model", f"local-dir:{tmp_path / 'sed'}", "--plot", str(png), "-q"]) == 0
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[1] == 1200  # 12 inches at 100 dpi
    assert capsys.readouterr().out == ""  # --plot alone lists nothing
    other = make_wav("other.wav", 2.0, rate=32000)
    assert main(["tag", str(path), str(other), "--model", f"local-dir:{tmp_path / 'sed'}", "--plot", str(png)]) == 2
    assert "--plot draws one file; 2 were given" in capsys.readouterr().err
