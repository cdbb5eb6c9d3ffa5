"""Write and read adrank model bundles (docs/design.md §3) with torch and the standard library only.

A bundle is a safetensors file: 8-byte little-endian header length, a JSON header
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {"adrank.format": "1",
"adrank.config": <config JSON string>}}` padded with spaces to a multiple of 8 bytes, then the
raw little-endian tensor data, contiguous, in the header's (sorted) name order. No pickle.

Tensors: the module's `state_dict()` (every key is a bundle name) plus the `ads.*` tables.
"""
from __future__ import annotations

import json
import math
import struct
import sys
from typing import Dict, Tuple

import torch

from .model import AdRankModel, AdTable, with_defaults

FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 * 1024 * 1024

# bundle dtype ↔ torch dtype used to hold the bits (U64 is held as int64: torch has no uint64)
_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64, "U64": torch.int64}
_SIZES = {"F32": 4, "BF16": 2, "I64": 8, "U64": 8}
_AD_DTYPES = {"ads.id": "I64", "ads.advertiser": "I64", "ads.sparse": "I64", "ads.targeting": "U64"}

if sys.byteorder != "little":  # pragma: no cover
    raise RuntimeError("scripts.reference.bundle assumes a little-endian host")


def _bundle_dtype(name: str, t: torch.Tensor) -> str:
    if name in _AD_DTYPES:
        return _AD_DTYPES[name]
    if t.dtype == torch.bfloat16:
        return "BF16"
    if t.dtype.is_floating_point:
        return "F32"
    raise ValueError(f"expected a floating tensor for {name}, got {t.dtype}")


def _raw_bytes(t: torch.Tensor, dtype: str) -> bytes:
    t = t.detach().cpu().to(_DTYPES[dtype]).contiguous()
    if dtype == "BF16":
        t = t.view(torch.int16)
    # numpy() is a zero-copy view; tobytes() gives the little-endian bytes on this host.
    return t.numpy().tobytes() if t.numel() else b""


def bundle_tensors(model: AdRankModel, ad_tables: AdTable) -> Dict[str, torch.Tensor]:
    """Every tensor of the bundle by name: state_dict keys plus `ads.*`."""
    out = {k: v for k, v in model.state_dict().items()}
    for k, v in ad_tables.tensors().items():
        if k in out:
            raise ValueError(f"ad table {k} collides with a module tensor")
        out[k] = v
    return out


def export_bundle(path: str, model: AdRankModel, config: dict, ad_tables: AdTable) -> None:
    """Writes `model` (weights as F32), `config` and `ad_tables` to a bundle file at `path`.

    `ads.retrieval` keeps its dtype (F32 or BF16); everything else floating is written as F32.
    Checks before writing: unique ad ids, finite weights.
    """
    tensors = bundle_tensors(model, ad_tables)
    ids = ad_tables.id.tolist()
    if len(set(ids)) != len(ids):
        raise ValueError("ads.id: ad ids must be unique")
    header: Dict[str, object] = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        dtype = _bundle_dtype(name, t)
        if dtype in ("F32", "BF16") and not bool(torch.isfinite(t.float()).all()):
            raise ValueError(f"{name}: contains NaN or Inf")
        raw = _raw_bytes(t, dtype)
        expected = _SIZES[dtype] * math.prod(t.shape)
        assert len(raw) == expected, (name, len(raw), expected)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"adrank.format": FORMAT_VERSION,
                              "adrank.config": json.dumps(with_defaults(config), separators=(",", ":"))}
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], Dict[str, str]]:
    """Reads a safetensors file with the checks safetensors makes. Returns (tensors, dtypes,
    metadata); U64 tensors come back as int64 holding the same bits."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: file too short for a safetensors header ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds the file or the {MAX_HEADER_BYTES}-byte cap")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors: Dict[str, torch.Tensor] = {}
    dtypes: Dict[str, str] = {}
    spans = []
    for name, info in header.items():
        dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise ValueError(f"{name}: unsupported dtype {dtype}")
        if not (0 <= b <= e <= len(data) - base):
            raise ValueError(f"{name}: data_offsets [{b}, {e}] outside the data section")
        if _SIZES[dtype] * math.prod(shape) != e - b:
            raise ValueError(f"{name}: {dtype} × {shape} does not match {e - b} bytes")
        spans.append((b, e, name))
        raw = bytearray(data[base + b:base + e])
        hold = torch.int16 if dtype == "BF16" else _DTYPES[dtype]
        t = torch.frombuffer(raw, dtype=hold) if raw else torch.empty(0, dtype=hold)
        if dtype == "BF16":
            t = t.view(torch.bfloat16)
        tensors[name] = t.reshape(shape)
        dtypes[name] = dtype
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise ValueError(f"{name}: data is not contiguous (starts at {b}, expected {pos})")
        pos = e
    if pos != len(data) - base:
        raise ValueError(f"{path}: {len(data) - base - pos} trailing bytes after the last tensor")
    return tensors, dtypes, meta


def import_bundle(path: str) -> Tuple[AdRankModel, dict, AdTable]:
    """Reads a bundle into (model, config, ad_tables); the module is built from the config and its
    state_dict loaded strictly (a missing or extra tensor is an error)."""
    tensors, _, meta = read_safetensors(path)
    if meta.get("adrank.format") != FORMAT_VERSION:
        raise ValueError(f"{path}: expected adrank.format {FORMAT_VERSION}, got {meta.get('adrank.format')!r}")
    config = json.loads(meta["adrank.config"])
    model = AdRankModel(config)
    ad_names = {k for k in tensors if k.startswith("ads.")}
    state = {k: v for k, v in tensors.items() if k not in ad_names}
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k in expected_shapes and tuple(v.shape) != expected_shapes[k]:
            raise ValueError(f"{k}: expected shape {list(expected_shapes[k])}, got {list(v.shape)}")
    model.load_state_dict(state, strict=True)
    ads = AdTable(**{k[len("ads."):]: tensors[k] for k in sorted(ad_names)})
    return model, config, ads
