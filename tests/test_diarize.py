"""Speaker diarization: mel features, the exported encoder, clustering on real voices, segment
assignment and the transcript formats (docs/speakers.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from vidnotes.diarize import (
    DiarizeOptions,
    Turn,
    _split_text,
    assign_speakers,
    cluster,
    make_turns,
    mel_spectrogram,
    normalize_volume,
    parse_speakers,
    speech_windows,
)
from vidnotes.formats import get_writer
from vidnotes.stages import StageFailed
from vidnotes.types import Segment, Transcript

SR = 16000


def _prompts(lang: str, n: int) -> list[np.ndarray]:
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import language_prompts

    ps = language_prompts(lang, min_words=5)[:n]
    return [decode_audio(p.path, input_format="g722" if lang == "en" else None) for p in ps]


def _join(parts: list[np.ndarray], gap_s: float) -> np.ndarray:
    gap = np.zeros(int(gap_s * SR), dtype=np.float32)
    return np.concatenate([x for p in parts for x in (p, gap)])


def _resemblyzer_hparams() -> dict:
    """resemblyzer/hparams.py read as text (importing the package needs webrtcvad and librosa)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("resemblyzer not installed (the speaker extra)")
    ns: dict = {}
    exec((Path(next(iter(spec.submodule_search_locations))) / "hparams.py").read_text(), ns)
    return ns


# -- features ----------------------------------------------------------------------------------


def test_mel_equals_resemblyzer_librosa():
    """resemblyzer's wav_to_mel_spectrogram is librosa.feature.melspectrogram with its hparams:
    ours equals it on real speech within 1e-4 relative to each frame's peak band."""
    librosa = pytest.importorskip("librosa")
    hp = _resemblyzer_hparams()
    audio = normalize_volume(_join(_prompts("en", 2), 0.3))
    ref = librosa.feature.melspectrogram(
        y=audio, sr=hp["sampling_rate"], n_fft=int(hp["sampling_rate"] * hp["mel_window_length"] / 1000),
        hop_length=int(hp["sampling_rate"] * hp["mel_window_step"] / 1000), n_mels=hp["mel_n_channels"],
    ).astype(np.float32).T  # fmt: skip
    ours = mel_spectrogram(audio)
    assert ours.shape == ref.shape
    scale = np.maximum(ref.max(axis=1, keepdims=True), 1e-6)
    assert float(np.abs(ours - ref).max() / ref.max()) < 1e-5
    assert float((np.abs(ours - ref) / scale).max()) < 1e-4


def test_mel_blocks_match_one_pass(monkeypatch):
    import vidnotes.diarize as d

    x = np.random.default_rng(0).standard_normal(SR * 3).astype(np.float32) * 0.1
    whole = mel_spectrogram(x)
    monkeypatch.setattr(d, "_BLOCK_FRAMES", 37)
    assert np.allclose(mel_spectrogram(x), whole, rtol=1e-5, atol=1e-7)
    assert whole.shape == (1 + len(x) // 160, 40)


def test_normalize_volume_like_resemblyzer():
    x = np.full(1000, 0.001, dtype=np.float32)
    y = normalize_volume(x)
    assert 20 * np.log10(np.sqrt(np.mean((y * 32767.0) ** 2)) / 32767) == pytest.approx(-30, abs=1e-3)
    loud = np.full(1000, 0.5, dtype=np.float32)
    assert normalize_volume(loud) is not None and np.allclose(normalize_volume(loud), loud)  # increase only


# -- the exported encoder ----------------------------------------------------------------------


@pytest.mark.models
def test_store_speaker_parity_recorded(store):
    """The store's speaker encoder was checked against torch on real speech at export."""
    m = store.manifest("speaker")
    assert m["precision"] == "fp32"
    for check in ("windows_160", "windows_80", "batch_1"):
        c = m["parity"]["checks"][check]
        assert c["max_abs_diff"] <= 1e-5 and c["min_cosine"] >= 0.99999, c


@pytest.mark.models
def test_onnx_encoder_equals_torch(store):
    pytest.importorskip("torch")
    import torch

    from vidnotes.diarize import SpeakerEncoder
    from vidnotes.export.speaker import load_encoder, parity_windows

    enc = SpeakerEncoder.from_store(store, threads=1)
    mels, _ = parity_windows(per_voice=2)
    with torch.no_grad():
        ref = load_encoder()(torch.from_numpy(mels)).numpy()
    got = enc.embed(mels)
    assert np.abs(got - ref).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


# -- clustering on real voices -----------------------------------------------------------------


@pytest.fixture(scope="module")
def models(store):
    from vidnotes.diarize import SpeakerEncoder
    from vidnotes.vad import SileroVad

    return SpeakerEncoder.from_store(store, threads=2), SileroVad.from_store(store)


def _conversation(a: list[np.ndarray], b: list[np.ndarray], turns: int) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    parts, ref, t = [], [], 0
    for i in range(turns):
        x = (a if i % 2 == 0 else b)[i // 2]
        ref.append((t / SR, (t + len(x)) / SR, i % 2))
        parts += [x, np.zeros(int(0.5 * SR), dtype=np.float32)]
        t += len(x) + int(0.5 * SR)
    return np.concatenate(parts), ref


def _confusion(ref, turns) -> float:
    """Share of reference speech given to the wrong speaker (best of the two mappings)."""

    def covered(mapping):
        ok = 0.0
        for s, e, sp in ref:
            ok += sum(max(0.0, min(e, t.end) - max(s, t.start)) for t in turns if mapping.get(t.speaker) == sp)
        return ok

    total = sum(e - s for s, e, _ in ref)
    return 1 - max(covered({0: 0, 1: 1}), covered({0: 1, 1: 0})) / total


@pytest.mark.models
def test_two_real_voices_found(models):
    """The English (Allison) and Italian (Carlo) Asterisk voices in alternating turns: two speakers, turns right."""
    from vidnotes.diarize import diarize

    enc, vad = models
    audio, ref = _conversation(_prompts("en", 5), _prompts("it", 5), 10)
    d = diarize(audio, enc, vad=vad)
    assert d.speakers == 2, d.stats
    assert _confusion(ref, d.turns) < 0.1
    given = diarize(audio, enc, vad=vad, speakers=2)
    assert given.speakers == 2


@pytest.mark.models
def test_one_voice_stays_one_speaker(models):
    """One speaker over 14 prompts, with long pauses and the second half 12 dB quieter (a change of
    microphone): one speaker, however the clustering first splits it."""
    from vidnotes.diarize import diarize

    enc, vad = models
    parts = _prompts("en", 14)
    parts = [p if i < 7 else p * 10 ** (-12 / 20) for i, p in enumerate(parts)]
    audio = np.concatenate(
        [x for i, p in enumerate(parts) for x in (p, np.zeros(int((4.0 if i % 4 == 3 else 0.6) * SR), dtype=np.float32))]
    )
    d = diarize(audio, enc, vad=vad)
    assert d.speakers == 1, d.stats
    assert diarize(audio, enc, vad=vad, speakers=1).speakers == 1


def test_cluster_merges_close_centroids():
    """Two tight clusters whose centroids are closer than merge_cosine become one; far apart they stay two."""
    rng = np.random.default_rng(0)
    base = np.abs(rng.standard_normal(256))
    other = np.abs(rng.standard_normal(256))

    def around(c, n):
        x = c + 0.05 * rng.standard_normal((n, 256)) * c.std()
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    near = base + 0.1 * other
    emb = np.concatenate([around(base, 30), around(near, 30)])
    secs = np.full(len(emb), 0.8)
    labels, _ = cluster(emb, secs, opts=DiarizeOptions())
    assert len(set(labels.tolist())) == 1
    far = np.concatenate([around(base, 30), around(other, 30)])
    labels, _ = cluster(far, secs, opts=DiarizeOptions())
    assert len(set(labels.tolist())) == 2 and labels[0] != labels[-1]
    labels, _ = cluster(far, secs, speakers=1)
    assert set(labels.tolist()) == {0}


def test_small_cluster_joins_nearest():
    rng = np.random.default_rng(1)
    a, b = np.abs(rng.standard_normal(256)), np.abs(rng.standard_normal(256))
    emb = np.concatenate([np.tile(a, (40, 1)), np.tile(b, (2, 1))]) + 0.01 * rng.standard_normal((42, 256))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels, _ = cluster(emb, np.full(42, 0.8))
    assert len(set(labels.tolist())) == 1  # 1.6 s of a second voice in 33.6 s is no speaker


# -- windows and turns -------------------------------------------------------------------------


def test_speech_windows():
    opts = DiarizeOptions(hop_s=0.8, min_window_s=0.5)
    w = speech_windows([(0, 4 * SR), (5 * SR, 5 * SR + 8000), (6 * SR, 6 * SR + 4000)], opts)
    full = [x for x in w if x[0] == 0]
    assert [(a, b) for _, a, b in full] == [(0, 160), (80, 240), (160, 320), (240, 400)]
    assert [x for x in w if x[0] == 1] == [(1, 500, 550)]  # 0.5 s: one window of its own length
    assert not [x for x in w if x[0] == 2]  # 0.25 s: none


def test_make_turns_cuts_and_joins():
    regions = [(0, 4 * SR), (5 * SR, 6 * SR), (int(6.1 * SR), int(6.3 * SR))]
    windows = speech_windows(regions)
    labels = np.array([0, 0, 1, 1, 1])  # 4 windows in region 0, 1 in region 1, none in the short region 2
    turns = make_turns(regions, windows, labels)
    # region 0 cut between the centres of its second and third windows (1.6 and 2.4 s); region 1
    # is speaker 1's; the short region 2 takes the speaker of the nearest window
    assert [(t.start, t.end, t.speaker) for t in turns] == [
        (0.0, pytest.approx(2.0), 0),
        (pytest.approx(2.0), 4.0, 1),
        (5.0, 6.0, 1),
        (6.1, 6.3, 1),
    ]
    # speakers renumbered in order of appearance
    assert [t.speaker for t in make_turns(regions, windows, np.array([1, 1, 0, 0, 0]))] == [0, 1, 1, 1]
    # touching turns of one speaker join
    assert len(make_turns([(0, 4 * SR)], speech_windows([(0, 4 * SR)]), np.array([0, 0, 0, 0]))) == 1


def test_assign_speakers_splits_a_segment():
    tr = Transcript([Segment(0.0, 4.0, "Hello there. How are you? I am fine thanks."), Segment(4.5, 6.0, "Good.")], duration=6.0)
    turns = [Turn(0.0, 2.0, 0), Turn(2.2, 4.0, 1), Turn(4.5, 6.0, 0)]
    out = assign_speakers(tr, turns)
    assert [s.speaker for s in out.segments] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert out.segments[0].end == pytest.approx(2.1) and out.segments[1].start == pytest.approx(2.1)
    assert " ".join(s.text.strip() for s in out.segments[:2]) == "Hello there. How are you? I am fine thanks."
    assert out.segments[0].text.strip().endswith("?") or out.segments[0].text.strip().endswith(".")
    # a speaker change of under 1 s inside a segment does not split it
    out = assign_speakers(Transcript([Segment(0.0, 5.0, "one two three four")], 5.0), [Turn(0.0, 4.5, 1), Turn(4.5, 5.0, 0)])
    assert len(out.segments) == 1 and out.segments[0].speaker == "Speaker 2"
    # names from the payload
    out = assign_speakers(tr, turns, names={0: "Ada", 1: "Bob"})
    assert [s.speaker for s in out.segments] == ["Ada", "Bob", "Ada"]


def test_assign_speakers_segment_outside_turns_takes_nearest():
    out = assign_speakers(Transcript([Segment(10.0, 11.0, "late")], 12.0), [Turn(0.0, 2.0, 0), Turn(8.0, 9.5, 1)])
    assert out.segments[0].speaker == "Speaker 2"


def test_split_text_prefers_sentence_ends():
    assert _split_text("One two. Three four five six", [0.45, 0.55]) == ["One two.", "Three four five six"]
    assert _split_text("a b c d", [1, 1]) == ["a b", "c d"]
    assert _split_text("single", [1, 1]) == ["single", ""]


def test_parse_speakers():
    assert parse_speakers("auto") is None and parse_speakers(None) is None and parse_speakers("3") == 3
    with pytest.raises(ValueError):
        parse_speakers("many")
    with pytest.raises(ValueError):
        parse_speakers("0x")


# -- formats -----------------------------------------------------------------------------------


def _diarized() -> Transcript:
    return Transcript([Segment(0.0, 1.5, "Hello.", "Speaker 1"), Segment(1.6, 3.0, "Hi <there> & you", "Speaker 2")], duration=3.0)


def test_formats_carry_the_speaker():
    t = _diarized()
    srt = get_writer("srt").render(t)
    assert "[Speaker 1] Hello." in srt and "[Speaker 2] Hi <there> & you" in srt
    vtt = get_writer("vtt").render(t)
    assert "<v Speaker 1>Hello." in vtt and "<v Speaker 2>Hi &lt;there> &amp; you" in vtt
    assert get_writer("txt").render(t).splitlines() == ["[Speaker 1] Hello.", "[Speaker 2] Hi <there> & you"]
    data = json.loads(get_writer("json").render(t))
    assert [s["speaker"] for s in data["segments"]] == ["Speaker 1", "Speaker 2"]
    assert Transcript.from_dict(data).segments == t.segments


def test_formats_without_speakers_unchanged():
    t = Transcript([Segment(0.0, 1.0, "Hello.")], duration=1.0)
    assert "speaker" not in json.loads(get_writer("json").render(t))["segments"][0]
    assert "[" not in get_writer("srt").render(t) and "<v" not in get_writer("vtt").render(t)


def test_notes_show_turns(tmp_path):
    """notes.md and the PDF: a paragraph per speaker turn, the speaker before it; notes.json keeps it."""
    import shutil
    import subprocess

    from vidnotes.notes import Chapter, Notes, paragraphs, transcript_units
    from vidnotes.report import NotesDocument, render_markdown, render_notes

    tr = Transcript(
        [
            Segment(0.0, 3.0, "Welcome to the seminar on bridges.", "Speaker 1"),
            Segment(3.0, 6.0, "Today we look at arches.", "Speaker 1"),
            Segment(6.5, 9.0, "Why do arches stand?", "Speaker 2"),
            Segment(9.5, 12.0, "Because stone works in compression.", "Speaker 1"),
        ],
        duration=12.0,
    )
    units = transcript_units(tr)
    paras = paragraphs(units)
    assert [(p.speaker, p.text) for p in paras] == [
        ("Speaker 1", "Welcome to the seminar on bridges. Today we look at arches."),
        ("Speaker 2", "Why do arches stand?"),
        ("Speaker 1", "Because stone works in compression."),
    ]
    notes = Notes("en", 12.0, [], [Chapter(0.0, 12.0, "Bridges", [], paras)], [], "extractive", "")
    assert Notes.from_dict(notes.to_dict()).chapters[0].paragraphs == paras
    doc = NotesDocument(title="Seminar", source="talk.mp4", duration=12.0, transcript=tr, notes=notes)
    md = render_markdown(doc)
    assert "**[0:00] Speaker 1:** Welcome" in md and "**[0:06] Speaker 2:** Why do arches stand?" in md
    pdf = render_notes(doc, tmp_path / "notes.pdf")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert "Speaker 2: Why do arches stand?" in text


def test_notes_without_speakers_unchanged():
    from vidnotes.notes import paragraphs, transcript_units

    tr = Transcript([Segment(0.0, 3.0, "One sentence here."), Segment(3.0, 6.0, "Another one.")], duration=6.0)
    paras = paragraphs(transcript_units(tr))
    assert len(paras) == 1 and paras[0].speaker is None and "speaker" not in paras[0].to_dict()


@pytest.mark.models
def test_cli_transcribe_speakers(store, tmp_path):
    """`vidnotes transcribe -f json --speakers auto` on two real voices: a speaker on every segment,
    both speakers present; SRT and VTT carry them; a bad --speakers is refused."""
    from vidnotes.cli import main
    from vidnotes.media import write_wav

    audio, _ = _conversation(_prompts("en", 3), _prompts("it", 3), 6)
    wav = tmp_path / "dialogue.wav"
    write_wav(wav, audio)
    out = tmp_path / "t.json"
    assert main(["--store", str(store.root), "transcribe", str(wav), "-f", "json", "--speakers", "auto", "-o", str(out), "-q"]) == 0
    data = json.loads(out.read_text())
    speakers = [s.get("speaker") for s in data["segments"]]
    assert data["segments"] and all(speakers) and set(speakers) == {"Speaker 1", "Speaker 2"}
    assert main(["--store", str(store.root), "transcribe", str(wav), "-f", "all", "-d", str(tmp_path / "all"), "--speakers", "2", "-q"]) == 0
    assert "<v Speaker 2>" in (tmp_path / "all" / "dialogue.vtt").read_text()
    assert "[Speaker 1] " in (tmp_path / "all" / "dialogue.srt").read_text()
    assert main(["--store", str(store.root), "transcribe", str(wav), "--speakers", "many", "-q"]) == 2


@pytest.mark.models
def test_run_with_speakers_notes_show_turns(store, tmp_path):
    """`vidnotes run --speakers auto`: speakers.json in the job, a speaker on every transcript
    segment, turns in notes.md."""
    from vidnotes.media import write_wav
    from vidnotes.pipeline import run_local

    audio, _ = _conversation(_prompts("en", 3), _prompts("it", 3), 6)
    wav = tmp_path / "in" / "dialogue.wav"
    wav.parent.mkdir()
    write_wav(wav, audio)
    pdf = run_local(wav, tmp_path / "out", store=store, say=lambda m: None, speakers="auto")
    job = pdf.parent
    turns = json.loads((job / "speakers.json").read_text())
    assert turns["speakers"] == 2 and turns["turns"]
    segs = json.loads((job / "transcript.json").read_text())["segments"]
    assert {s["speaker"] for s in segs} == {"Speaker 1", "Speaker 2"}
    assert "Speaker 2:**" in (job / "notes.md").read_text()
    # the same content without --speakers: the speakers.json left by the run before is not used
    run_local(wav, tmp_path / "out", store=store, say=lambda m: None)
    segs = json.loads((job / "transcript.json").read_text())["segments"]
    assert segs and all("speaker" not in s for s in segs) and "Speaker" not in (job / "notes.md").read_text()
    # names from the caller, no new diarization needed for them; a name for a speaker not found is refused
    run_local(wav, tmp_path / "out", store=store, say=lambda m: None, speakers="auto", speaker_names={"1": "Allison", "2": "Carlo"})
    segs = json.loads((job / "transcript.json").read_text())["segments"]
    assert {s["speaker"] for s in segs} == {"Allison", "Carlo"} and "Carlo:**" in (job / "notes.md").read_text()
    with pytest.raises(StageFailed, match=r"speaker_names names speaker\(s\) \[3\], but the diarization found 2"):
        run_local(wav, tmp_path / "out", store=store, say=lambda m: None, speakers="auto", speaker_names={"3": "Nobody"})
