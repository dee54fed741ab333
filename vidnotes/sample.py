"""A sample talk video for demos and tests: espeak-ng speech over a generated picture, muxed by
ffmpeg. Real tools, synthetic voice; nothing downloaded. Also synthetic non-speech audio
(:func:`noise`: pink and brown noise, applause, music, mains hum) for the VAD's tests and
``bench/bench_noise.py``."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_TALK = (
    "Welcome to this short lecture on how rivers shape the land. "
    "Water flowing downhill picks up sand and small stones, and carries them towards the sea. "
    "Over thousands of years this slow work cuts deep valleys into solid rock. "
    "Next, let us talk about bridges. "
    "A bridge must carry its own weight as well as the traffic that crosses it. "
    "Engineers choose between beams, arches and cables depending on the distance to span. "
    "Finally, a word about bread. "
    "Bakers mix flour, water, salt and yeast, then let the dough rise before baking it in a hot oven. "
    "Thank you for listening, and see you next week."
)

PROMPT_LANGUAGES = ("ru", "fr", "es", "it")  # sample talks of real speech (Debian's Asterisk prompts)


def make_sample_video(
    out: Path, *, text: str = SAMPLE_TALK, voice: str = "en-us", speed: int = 135, word_gap: int = 4, timeout: float = 120.0
) -> Path:
    """Write an MP4 (H.264 picture + AAC speech) of ``text`` read by espeak-ng at ``speed`` words
    a minute with ``word_gap`` x 10 ms between words. The defaults read a little slower than
    espeak-ng's 175, with gaps between words: at 150 words a minute tiny.en heard the sample talk's
    "short lecture on how rivers" as "short-led Quran however"."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-g", str(word_gap), "-w", str(wav), text], check=True, timeout=timeout)
        _mux(wav, out, timeout=timeout)
    return out


def make_prompt_talk(out: Path, language: str, *, prompts: int = 45, pause: float = 0.8, timeout: float = 120.0) -> Path:
    """An MP4 of real recorded speech in ``language`` (ru, fr, es, it): ``prompts`` of Debian's
    Asterisk prompts (one speaker; every 4th in name order, so that the topic families follow each
    other: conferences, voicemail, agents, ...) joined with ``pause`` s of silence, over the same
    picture. espeak-ng's voices in these languages are not understood by Whisper (its Russian
    came out as Latin and repetition loops), so the non-English samples use real voices."""
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import language_prompts

    chosen = language_prompts(language, min_words=4)[::4][:prompts]
    gap = np.zeros(int(pause * 16000), dtype=np.float32)
    parts: list[np.ndarray] = []
    for p in chosen:
        parts += [decode_audio(p.path), gap]
    return _video_of(np.concatenate(parts), out, timeout=timeout)


def make_dialogue(out: Path, *, turns: int = 5, pause: float = 0.7, timeout: float = 120.0) -> Path:
    """An MP4 of two real English voices taking turns: the voice of Debian's Asterisk prompts
    (three prompts a turn) and the LibriVox reader of pocketsphinx-testdata (one passage of *Sense
    and Sensibility* a turn), ``turns`` times each, ``pause`` s between turns. What the speaker
    diarization is shown on (``make demo VIDEO=... SPEAKERS=auto``; docs/speakers.md)."""
    from vidnotes.audio import decode_audio
    from vidnotes.datasets import POCKETSPHINX_DATA, eligible, read_transcripts

    prompts = [r for r in eligible(read_transcripts()) if r.name.startswith("conf-")][: 3 * turns]
    reader = sorted((POCKETSPHINX_DATA / "librivox").glob("*.wav"))
    if len(prompts) < 3 * turns or not reader:
        raise FileNotFoundError("the dialogue needs Debian's asterisk-core-sounds-en-g722 and pocketsphinx-testdata (make system-deps)")
    gap = np.zeros(int(pause * 16000), dtype=np.float32)
    parts: list[np.ndarray] = []
    for t in range(turns):
        parts += [x for r in prompts[3 * t : 3 * t + 3] for x in (decode_audio(r.path), gap[: len(gap) // 2])] + [gap]
        parts += [decode_audio(reader[t % len(reader)]), gap]
    return _video_of(np.concatenate(parts), out, timeout=timeout)


def _video_of(audio: np.ndarray, out: Path, *, timeout: float) -> Path:
    """An MP4 at ``out`` of 16 kHz mono ``audio`` over the sample picture."""
    from vidnotes.media import write_wav

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        write_wav(wav, audio)
        _mux(wav, out, timeout=timeout)
    return out


def _mux(wav: Path, out: Path, *, timeout: float) -> None:
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "color=c=0x1d3557:s=640x360:r=10",
            "-i", str(wav),
            "-vf", "drawbox=x=40:y=150:w=560:h=60:color=0xf1faee@0.9:t=fill",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-shortest", str(out),
        ],
        check=True,
        timeout=timeout,
    )  # fmt: skip


NOISE_KINDS = ("pink", "brown", "applause", "music", "hum")


def noise(kind: str, seconds: float, *, seed: int = 0, rms_dbfs: float = -20.0, sample_rate: int = 16_000) -> np.ndarray:
    """``seconds`` of non-speech audio as float32 at ``sample_rate``, deterministic for a seed,
    scaled to ``rms_dbfs``:

    - ``pink``: 1/f noise (white noise shaped in the frequency domain);
    - ``brown``: 1/f^2 noise (integrated white noise, leaky so it does not drift);
    - ``applause``: a crowd clapping in swells: Poisson claps (3-12 ms band-limited noise bursts
      with fast decay) at a rate that rises and falls, over a little room noise;
    - ``music``: chords of harmonic tones (a four-chord progression, 0.5-1 s per chord, attack
      and decay) over a bass note and a soft hi-hat;
    - ``hum``: 50 Hz mains hum with its harmonics and a little hiss.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if kind in ("pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / sample_rate)
        f[0] = f[1]
        spec /= np.sqrt(f) if kind == "pink" else np.maximum(f, 20.0)  # brown: 1/f^2 power, flat below 20 Hz
        x = np.fft.irfft(spec, n)
    elif kind == "applause":
        x = 0.02 * rng.standard_normal(n)
        # intensity: swells of 3-8 s with short lulls between them
        rate = np.zeros(n)
        pos = 0
        while pos < n:
            length = int(rng.uniform(3, 8) * sample_rate)
            env = np.sin(np.linspace(0, np.pi, min(length, n - pos))) ** 0.5
            rate[pos : pos + len(env)] = rng.uniform(15, 60) * env
            pos += length + int(rng.uniform(0.2, 1.5) * sample_rate)
        starts = np.flatnonzero(rng.random(n) < rate / sample_rate)
        for s0 in starts:
            ln = int(rng.uniform(0.003, 0.012) * sample_rate)
            burst = rng.standard_normal(ln) * np.exp(-np.arange(ln) / (ln / 4))
            burst = np.convolve(burst, [1, -0.6 * rng.random()], mode="same")  # each clap its own colour
            x[s0 : s0 + ln] += rng.uniform(0.2, 1.0) * burst[: n - s0]
    elif kind == "music":
        x = np.zeros(n)
        roots = [57, 52, 54, 50]  # A, E, F#m, D (MIDI): a pop progression
        pos, k = 0, 0
        while pos < n:
            length = min(n - pos, int(rng.choice([0.5, 0.75, 1.0]) * sample_rate))
            tt = np.arange(length) / sample_rate
            env = np.minimum(1, tt / 0.02) * np.exp(-tt / 0.6)
            root = roots[k % len(roots)]
            chord = [root, root + (3 if k % 4 == 2 else 4), root + 7, root + 12]
            for m in chord:
                f0 = 440.0 * 2 ** ((m - 69) / 12)
                x[pos : pos + length] += env * sum(np.sin(2 * np.pi * f0 * h * tt) / h**1.5 for h in range(1, 6))
            fb = 440.0 * 2 ** ((root - 24 - 69) / 12)
            x[pos : pos + length] += 1.5 * env * np.sin(2 * np.pi * fb * tt)
            hat = int(0.03 * sample_rate)
            x[pos : pos + hat] += 0.3 * rng.standard_normal(hat) * np.exp(-np.arange(hat) / (hat / 5))
            pos += length
            k += 1
    elif kind == "hum":
        x = sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
        x = x + 0.01 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}: one of {', '.join(NOISE_KINDS)}")
    x = np.asarray(x, dtype=np.float64)
    x -= x.mean()
    x *= 10 ** (rms_dbfs / 20) / max(float(np.sqrt((x**2).mean())), 1e-12)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Make a sample talk video (espeak-ng + ffmpeg).")
    ap.add_argument("out", type=Path, help="output .mp4")
    ap.add_argument(
        "--language", choices=("en", *PROMPT_LANGUAGES), default="en",
        help="en (default): the sample lecture read by espeak-ng; ru, fr, es, it: real recorded speech (Asterisk prompts)",
    )  # fmt: skip
    ap.add_argument("--dialogue", action="store_true", help="two real English voices taking turns (Asterisk prompts, a LibriVox reader), for --speakers")
    ap.add_argument("--text", default=SAMPLE_TALK, help="what espeak-ng says (English)")
    ap.add_argument("--speed", type=int, default=135, help="words a minute (default: %(default)s)")
    ap.add_argument("--word-gap", type=int, default=4, help="pause between words, in 10 ms (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.dialogue:
        print(make_dialogue(args.out))
        return 0
    if args.language != "en":
        print(make_prompt_talk(args.out, args.language))
        return 0
    print(make_sample_video(args.out, text=args.text, speed=args.speed, word_gap=args.word_gap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
