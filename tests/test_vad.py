"""Silero VAD through onnxruntime + numpy (vidnotes/vad.py) and what it changes in transcription:
parity with the silero-vad package, regions on real speech, noise that gives no text, speech
between noise that keeps its words, and extract_audio's speech seconds (needs `make models`)."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from conftest import load
from vidnotes import jobs, stages
from vidnotes.asr import TranscriptionOptions, WhisperOnnx
from vidnotes.audio import SAMPLE_RATE, Window, decode_audio
from vidnotes.export.vad import CANDIDATES, package_dir
from vidnotes.sample import NOISE_KINDS, noise
from vidnotes.storage import LocalStorage
from vidnotes.vad import FRAME_SAMPLES, SileroVad, SpeechMap, VadOptions, WindowOptions, plan_windows, speech_regions
from vidnotes.wer import normalize, wer

PAUSE_S = 1.5


@pytest.fixture(scope="module")
def vad(store):
    return SileroVad.from_store(store)


@pytest.fixture(scope="module")
def model(store, vad):
    model_dir, manifest = store.fetch("whisper")
    return WhisperOnnx(model_dir, name=f"whisper/{manifest['version']}", vad=vad)


@pytest.fixture(scope="module")
def paused(test_split):
    """Ten test recordings with 1.5 s of quiet pink noise (-45 dBFS) between them: the pauses
    are known (sample spans), and are not digital silence."""
    parts, pauses, pos = [], [], 0
    for i, r in enumerate(test_split[:10]):
        x = load(r)
        parts.append(x)
        pos += len(x)
        gap = noise("pink", PAUSE_S, seed=i, rms_dbfs=-45.0)
        parts.append(gap)
        pauses.append((pos, pos + len(gap)))
        pos += len(gap)
    return np.concatenate(parts), pauses, test_split[:10]


def test_probabilities_match_the_package_on_real_speech(vad, paused):
    """The store's model, run by vidnotes, against silero-vad's own reference (torch): its
    TorchScript model within 1e-4, its ONNX wrapper within 1e-6, the same speech timestamps."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    audio = paused[0]
    probs = carried_probs(vad, audio)  # the state carried on, as the package does
    assert probs.shape == ((len(audio) + FRAME_SAMPLES - 1) // FRAME_SAMPLES,) and probs.dtype == np.float32
    x = torch.from_numpy(audio)
    jit = load_silero_vad(onnx=False)
    with torch.no_grad():
        ref_jit = jit.audio_forward(x, 16000).numpy().reshape(-1)
        stamps = get_speech_timestamps(x, jit, sampling_rate=16000)
    ref_onnx = load_silero_vad(onnx=True).audio_forward(x, 16000).numpy().reshape(-1)
    assert np.abs(probs - ref_jit).max() <= 1e-4
    assert np.abs(probs - ref_onnx).max() <= 1e-6
    assert probs.max() > 0.9 and probs.min() < 0.1  # the audio has speech and pauses
    assert [(r.start, r.end) for r in speech_regions(probs, len(audio))] == [(s["start"], s["end"]) for s in stamps]


def test_both_onnx_forms_agree_and_the_faster_is_published(store, paused):
    audio = paused[0][: 20 * SAMPLE_RATE]
    d = package_dir()
    stream = SileroVad(d / CANDIDATES["stream"], interface="stream").probabilities(audio)
    sequence = SileroVad(d / CANDIDATES["sequence"], interface="sequence", block_frames=100, warmup_frames=None).probabilities(audio)  # blocks carry the state
    assert np.abs(stream - sequence).max() <= 1e-6
    m = store.manifest("vad")
    checks = m["parity"]["checks"]
    assert m["onnx"]["interface"] == m["parity"]["chosen"] == min(checks, key=lambda k: checks[k]["seconds"])
    assert all(c["regions_equal_package"] and c["max_abs_diff_vs_package_jit"] <= 1e-4 for c in checks.values())
    assert m["files"][m["onnx"]["model"]]["sha256"] and m["license"] == "MIT"


def test_a_fresh_state_every_few_seconds_keeps_speech_that_a_carried_state_misses(vad, paused):
    """Real speech of one man in one room, then of the same man with a cold in another room: run
    on, Silero's state locks into "no speech" for the whole second recording; the resets keep it."""
    from vidnotes.datasets import varied_english

    first, second = varied_english()[:2]
    a, b = decode_audio(first.path), decode_audio(second.path)
    audio = np.concatenate([a, np.zeros(9600, dtype=np.float32), b])
    part = slice((len(a) + 9600) // FRAME_SAMPLES, None)
    carried = carried_probs(vad, audio)[part]
    fresh = vad.probabilities(audio)[part]
    alone = vad.probabilities(b)
    assert carried.mean() < 0.1 < 0.3 < fresh.mean() and alone.mean() > 0.5
    # on speech the carried state handles, the resets change little
    x = paused[0]
    assert np.abs(vad.probabilities(x) - carried_probs(vad, x)).mean() < 0.02
    assert vad.block_frames == 128 and vad.warmup_frames == 32


def test_blocks_run_in_parallel_give_the_probabilities_of_one_worker(vad, paused):
    """With a fresh state per block the blocks are independent: run two at a time (the default on
    two cores) they give exactly what one worker gives, frame for frame."""
    x = paused[0]
    one = SileroVad(vad.model_path, workers=1).probabilities(x)
    two = SileroVad(vad.model_path, workers=2).probabilities(x)
    assert len(one) > 4 * vad.block_frames  # several blocks
    assert np.array_equal(one, two)


def carried_probs(vad: SileroVad, audio: np.ndarray) -> np.ndarray:
    """Probabilities with the LSTM state carried from block to block (the package's way)."""
    return SileroVad(vad.model_path, block_frames=512, warmup_frames=None).probabilities(audio)


@pytest.mark.parametrize(
    "opts",
    [
        VadOptions(),
        VadOptions(threshold=0.3, min_silence_ms=500, speech_pad_ms=400),
        VadOptions(threshold=0.7, min_speech_ms=0, min_silence_ms=2000),
        VadOptions(max_speech_s=3.0),  # splits at the longest silence
        VadOptions(max_speech_s=2.0, use_max_poss_sil_at_max_speech=False),  # the legacy split
        VadOptions(max_speech_s=1.0, min_silence_at_max_speech_ms=500),  # hard cuts
    ],
)
def test_regions_are_silero_state_machine(vad, paused, opts):
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    audio = paused[0]
    probs = vad.probabilities(audio)
    ref = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=16000, threshold=opts.threshold, min_speech_duration_ms=opts.min_speech_ms,
        max_speech_duration_s=opts.max_speech_s, min_silence_duration_ms=opts.min_silence_ms, speech_pad_ms=opts.speech_pad_ms,
        neg_threshold=opts.neg_threshold, min_silence_at_max_speech=opts.min_silence_at_max_speech_ms,
        use_max_poss_sil_at_max_speech=opts.use_max_poss_sil_at_max_speech, audio_length_samples=len(audio),
    )  # fmt: skip
    assert [(r.start, r.end) for r in speech_regions(probs, len(audio), opts)] == [(s["start"], s["end"]) for s in ref]


def test_regions_and_windows_on_real_speech_with_known_pauses(vad, paused):
    audio, pauses, recs = paused
    sp = vad.speech(audio)
    pad = int(0.3 * SAMPLE_RATE)  # silero's 30 ms padding, and the LSTM's lag in letting go of speech (a little longer after a state reset)
    for a, b in pauses:  # no speech in the middle 1 s of a pause
        assert sp.speech_samples(a + pad, b - pad) == 0, f"speech in the pause at {a / SAMPLE_RATE:.2f} s"
    starts = [0] + [b for _, b in pauses[:-1]]
    for (a, _), s0, r in zip(pauses, starts, recs):  # most of each recording is speech
        assert sp.speech_samples(s0, a) > 0.5 * (a - s0), r.name
        inside = sp.within(s0, a)
        assert inside[-1].end >= a - 0.5 * SAMPLE_RATE and inside[0].start <= s0 + 0.6 * SAMPLE_RATE, r.name
    assert 0.6 * len(audio) < sp.speech_samples(0, len(audio)) < len(audio) - 0.5 * sum(b - a for a, b in pauses)
    windows = sp.windows()
    assert windows[0].start == 0 and windows[-1].end == len(audio)
    assert all(x.end == y.start for x, y in zip(windows, windows[1:]))
    assert all(0 < w.seconds <= 30 for w in windows) and len(windows) >= 2
    for w in windows[:-1]:  # every cut lies in a pause the VAD found, not in speech
        assert not any(r.start < w.end < r.end for r in sp.regions), f"cut at {w.end / SAMPLE_RATE:.2f} s splits a speech region"


def test_plan_windows_isolates_long_gaps_and_splits_long_speech():
    s = SAMPLE_RATE
    n = 200 * s
    regions = [Window(5 * s, 8 * s), Window(9 * s, 12 * s), Window(40 * s, 110 * s), Window(170 * s, 171 * s)]
    probs = np.full(n // FRAME_SAMPLES + 1, 0.9, dtype=np.float32)
    probs[(60 * s) // FRAME_SAMPLES] = 0.2  # the least speech-like moment in the second half of the 70 s region's first 28 s
    wins = plan_windows(n, regions, probs, WindowOptions())
    assert wins[0].start == 0 and wins[-1].end == n and all(a.end == b.start for a, b in zip(wins, wins[1:]))
    assert all(0 < w.seconds <= 30 for w in wins)
    sp = SpeechMap(tuple(regions), n, probs)
    speechy = [w for w in wins if sp.speech_samples(w.start, w.end)]
    assert speechy[0] == Window(4 * s, 13 * s)  # the 1 s pause is inside; 1 s margins
    assert Window(39 * s, 60 * s + FRAME_SAMPLES + FRAME_SAMPLES // 2) in speechy  # cut at the dip (3-frame mean: its last frame)
    silent = [w for w in wins if not sp.speech_samples(w.start, w.end)]
    assert sum(w.end - w.start for w in silent) == (4 + 26 + 58 + 28) * s  # the long gaps, less 1 s margins, are windows without speech
    assert Window(169 * s, 172 * s) in wins
    assert plan_windows(0, [], None) == [] and plan_windows(65 * s, [], None) == [Window(0, 30 * s), Window(30 * s, 60 * s), Window(60 * s, 65 * s)]


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_gives_no_text(model, kind):
    audio = noise(kind, 60.0, seed=3)
    stats: dict[str, int] = {}
    t = model.transcribe(audio, stats=stats)
    assert t.segments == [] and stats["decoded"] == 0 and stats["skipped_no_vad_speech"] == stats["windows"] >= 2


def test_without_vad_whisper_invents_words_in_applause(model):
    """What the VAD is for: the same model on the path without it writes text into applause."""
    t = model.transcribe(noise("applause", 30.0, seed=3), TranscriptionOptions(vad=False))
    assert len(normalize(t.text).split()) >= 3


def test_speech_between_noise_keeps_its_words(model, test_split):
    """A talk: 20 s of pink noise, twelve recordings, 20 s of applause."""
    recs = test_split[:12]
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    speech = np.concatenate([x for r in recs for x in (load(r), gap)])
    talk = np.concatenate([noise("pink", 20.0, seed=1), speech, noise("applause", 20.0, seed=2)])
    stats: dict[str, int] = {}
    t = model.transcribe(talk, stats=stats)
    ref = " ".join(r.text for r in recs)
    assert wer([ref], [t.text]) <= 0.02, t.text
    hyp = normalize(t.text)
    for r in recs:
        assert normalize(r.text) in hyp, r.name
    end = 20.0 + len(speech) / SAMPLE_RATE
    assert all(19.0 <= s.start and s.end <= end + 1.0 for s in t.segments)
    assert stats["skipped_no_vad_speech"] >= 2  # the noise before and after was not decoded


def test_windows_without_speech_are_not_decoded(model, test_split):
    """Windows given by hand (as transcribe gets them from chunks.json), one of them applause."""
    speech = load(test_split[0])
    n = len(speech)
    audio = np.concatenate([speech, noise("applause", 25.0, seed=4)])
    sp = SpeechMap((Window(0, n),), len(audio))  # regions as extract_audio stores them
    stats: dict[str, int] = {}
    segs = list(model.segments(audio, TranscriptionOptions(), windows=[Window(0, n), Window(n, len(audio))], speech=sp, stats=stats))
    assert stats["skipped_no_vad_speech"] == 1 and stats["decoded"] == 1
    assert normalize(" ".join(s.text for s in segs)) == normalize(test_split[0].text)


def test_segments_wholly_outside_speech_are_dropped(model):
    """The second opinion on Whisper's no-speech decision, with decoder output fixed by hand: a
    window whose speech is at 0-3 s, where Whisper also 'hears' text at 10-12 s and 2.9-8 s."""
    from vidnotes.asr import WindowResult

    tok = model.tokenizer

    def ts(t):
        return tok.timestamp_begin + int(round(t / 0.02))

    def words(text):
        return tok.tokenizer.encode(text, add_special_tokens=False).ids

    tokens = [ts(0.0), *words(" Real words here."), ts(2.0), ts(2.9), *words(" Overlapping the end."), ts(8.0), ts(10.0), *words(" Invented."), ts(12.0)]

    class Fixed(WhisperOnnx):
        def __init__(self, base):
            self.__dict__.update(base.__dict__)

        def transcribe_windows(self, audio, windows, opts=None, **kw):
            return [WindowResult(w, tokens, -0.2, 0.01) for w in windows]

    fixed = Fixed(model)
    audio = np.zeros(20 * SAMPLE_RATE, dtype=np.float32)
    sp = SpeechMap((Window(int(0.1 * SAMPLE_RATE), 3 * SAMPLE_RATE),), len(audio))
    stats: dict[str, int] = {}
    segs = list(fixed.segments(audio, TranscriptionOptions(recover_tails=False), windows=[Window(0, len(audio))], speech=sp, stats=stats))
    assert [s.text for s in segs] == ["Real words here.", "Overlapping the end."] and stats["dropped_outside_speech"] == 1
    # without the VAD all three stay (digital silence aside: the window is not checked for it here)
    segs = list(fixed.segments(audio + 0.01, TranscriptionOptions(vad=False, recover_tails=False), windows=[Window(0, len(audio))]))
    assert len(segs) == 3


def _wav(path, audio):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


class CountingStorage(LocalStorage):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.downloads: list[str] = []

    def download(self, key, dest):
        self.downloads.append(key)
        return super().download(key, dest)


def test_extract_audio_records_speech_seconds(vad, model, test_split, tmp_path):
    recs = test_split[:3]
    speech = np.concatenate([load(r) for r in recs])
    audio = np.concatenate([noise("brown", 40.0, seed=5), speech, noise("hum", 35.0, seed=6)])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _wav(inbox / "talk.wav", audio)
    results = CountingStorage(tmp_path / "results", bucket="local")
    req = jobs.ExtractRequest(bucket="local", key="talk.wav")
    ext = stages.extract_audio(req, source=LocalStorage(inbox), results=results, limits=stages.Limits(), work=tmp_path, vad=vad)
    speech_s = len(speech) / SAMPLE_RATE
    assert ext.speech_seconds is not None and ext.non_speech_seconds is not None
    assert 0.7 * speech_s <= ext.speech_seconds <= speech_s + 0.5
    assert ext.speech_seconds + ext.non_speech_seconds == pytest.approx(ext.duration, abs=0.01) and ext.non_speech_seconds >= 75.0
    job = tmp_path / "results" / "jobs" / ext.job_id
    source = json.loads((job / "source.json").read_text())
    assert source["speech_seconds"] == pytest.approx(ext.speech_seconds, abs=0.01) and source["vad"].startswith("vad/")
    assert {"input", "duration", "media"} <= set(source)
    chunks = json.loads((job / "chunks.json").read_text())
    assert all(c["end"] - c["start"] <= 30.0 + 1e-6 for c in chunks), [(c["start"], c["end"]) for c in chunks]
    assert sum(1 for c in chunks if not c["speech"]) >= 2
    for c in chunks:  # regions are inside their chunk, in seconds of the whole audio
        assert all(c["start"] <= a < b <= c["end"] for a, b in c["speech"])
    # transcribe downloads and decodes only the chunks with speech
    out = stages.transcribe(jobs.TranscribeRequest(job_id=ext.job_id, chunks=list(range(len(chunks)))), results=results, model=model, work=tmp_path)
    assert sorted(results.downloads) == sorted(c["key"] for c in chunks if c["speech"])
    segs = json.loads((job / "segments" / "00000.json").read_text())
    assert segs["chunks"] == list(range(len(chunks))) and out.segments == len(segs["segments"]) > 0
    assert wer([" ".join(r.text for r in recs)], [" ".join(s["text"] for s in segs["segments"])]) <= 0.1
    assert all(39.0 <= s["start"] and s["end"] <= 40.0 + speech_s + 1.0 for s in segs["segments"])
    # the same content again: the duplicate result carries the same numbers
    again = stages.extract_audio(req, source=LocalStorage(inbox), results=results, limits=stages.Limits(), work=tmp_path, vad=vad)
    assert again.duplicate and again.speech_seconds == ext.speech_seconds
    # without the VAD (as before): no speech fields
    results2 = LocalStorage(tmp_path / "results-plain", bucket="local")
    plain = stages.extract_audio(req, source=LocalStorage(inbox), results=results2, limits=stages.Limits(), work=tmp_path)
    assert plain.speech_seconds is None and plain.non_speech_seconds is None


def test_speech_between_long_pauses_is_packed_into_one_window_and_timed_in_the_original(model, test_split):
    """Four real recordings with 12 s of applause-like noise between them: four speech windows,
    packed into as few Whisper windows as they fit in (the noise left out), each recording's words
    timed inside it."""
    from vidnotes.asr import PACK_GAP, Span, pack_windows

    recs = test_split[10:14]
    parts, spans, pos = [], [], 0
    for i, r in enumerate(recs):
        gap = noise("applause", 12.0, seed=20 + i)
        x = load(r)
        parts += [gap, x]
        spans.append((pos + len(gap), pos + len(gap) + len(x)))
        pos += len(gap) + len(x)
    audio = np.concatenate(parts)
    stats: dict = {}
    t = model.transcribe(audio, TranscriptionOptions(), stats=stats)
    plain = model.transcribe(audio, TranscriptionOptions(pack=False))
    total = sum(b - a for a, b in spans) + 4 * 2 * SAMPLE_RATE  # the speech and its windows' margins
    assert stats["windows"] - stats["skipped_no_vad_speech"] == 4  # four speech windows ...
    assert stats["packed"] == stats["decoded"] - stats["tails"] == -(-total // (30 * SAMPLE_RATE))  # ... in as few as fit
    ref = " ".join(r.text for r in recs)
    assert wer([ref], [t.text]) <= wer([ref], [plain.text]) + 0.05 and wer([ref], [t.text]) < 0.15, (t.text, plain.text)
    for g in t.segments:  # every segment lies in (or at the edge of) one recording's span
        assert any(a - SAMPLE_RATE <= g.start * SAMPLE_RATE and g.end * SAMPLE_RATE <= b + SAMPLE_RATE for a, b in spans), (g, spans)
    assert {next(k for k, (a, b) in enumerate(spans) if a - SAMPLE_RATE <= g.start * SAMPLE_RATE <= b) for g in t.segments} == {0, 1, 2, 3}
    # the mapping itself: joined samples back to the original
    sp = Span((Window(100, 200), Window(1000, 1100)))
    assert sp.samples() == 200 + PACK_GAP and sp.to_original(50) == 150 and sp.to_original(100 + PACK_GAP + 10) == 1010
    assert sp.to_original(100 + PACK_GAP // 2 - 1) == 200 and sp.to_original(10**9) == 1100
    full = int(30 * SAMPLE_RATE)
    assert pack_windows([Window(0, 100), Window(100, 300)]) == [Window(0, 300)]  # adjacent: one piece
    assert len(pack_windows([Window(0, full - 10), Window(full, full + 100)])) == 2  # too long together


def test_an_overlong_last_segment_is_cut_where_its_text_runs_out():
    """Whisper sometimes gives a window's last segment a few words and an end many seconds of
    speech later (a passage it skipped): the segment ends where its text's speech at a typical
    rate runs out, so the rest is decoded again as a missed tail; plausible segments stay."""
    from vidnotes.asr import _cut_overlong
    from vidnotes.types import Segment

    s = SAMPLE_RATE
    sp = SpeechMap((Window(0, 2 * s), Window(3 * s, 5 * s), Window(6 * s, 20 * s)), 20 * s)
    short = Segment(0.0, 20.0, "Good morning and welcome.")  # 25 chars: 2.5 s plausible, 18 s of speech
    cut = _cut_overlong(short, sp)
    assert (cut.start, cut.end, cut.text) == (0.0, 2.0, short.text)  # 25/15 = 1.7 s: inside the first region
    longer = Segment(0.0, 20.0, "x" * 40)  # 40/15 = 2.7 s of speech: runs out in the second region
    assert _cut_overlong(longer, sp).end == 5.0
    plausible = Segment(0.0, 20.0, "y" * 80)  # 8 s plausible: 2 x 8 + 3 = 19 s >= 18 s of speech
    assert _cut_overlong(plausible, sp) is plausible
    in_last = Segment(6.0, 20.0, "z" * 20)  # the speech runs out only in the last region: nothing to cut
    assert _cut_overlong(in_last, sp) is in_last
