"""The winners' feature keys and the two hashing modes.

Keys (3 Idiots, pre-b/common.py): integer field I_j -> "I{j}-" + ("" if missing, "SP{v}" if
v <= 2, else str(floor((ln v)^2))); categorical field C_j -> "C{j}-{value}" (empty value included),
or "C{j}less" when the value's training count is below the threshold. A key is hashed as bytes:
"C{j}-" and the value's raw bytes, whatever they are (texts of non-UTF-8 values hold them as
lone surrogates, parse.py's errors="surrogateescape"), so distinct values never share a key.

Hash modes: "md5", the winners' exact scheme (int(md5(key), 16) mod (bins - 1) + 1, one shared
space for all fields, so collisions merge values as they did for the winners); "xxh64", the fast
default (64-bit xxHash of the key: collisions practically never happen). Only the vocabulary is
hashed (once per distinct training key), then every field is re-indexed to contiguous ids.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import xxhash

from preprocessing import parse, schema


def int_code(value: int | None) -> int:
    """The parser's code of one integer value (None = missing), for tests and references."""
    if value is None:
        return parse.INT_MISSING
    if value <= 2:
        return value
    return parse.LOG_BASE + int(math.log(float(value)) ** 2)


def key(field: int, code: int, fallback_text: dict | None = None) -> str:
    """The winners' key string of value `code` of field index `field` (0..38)."""
    name = schema.FIELD_NAMES[field]
    if field < schema.NUM_INT_FIELDS:
        if code == parse.INT_MISSING:
            return f"{name}-"
        if code <= 2:
            return f"{name}-SP{code}"
        return f"{name}-{code - parse.LOG_BASE}"
    if code == parse.CAT_MISSING:
        return f"{name}-"
    if code & parse.FALLBACK_BIT:
        return f"{name}-{fallback_text[code]}"
    return f"{name}-{code:08x}"


def rare_key(field: int) -> str:
    return f"{schema.FIELD_NAMES[field]}less"


def hash_key(text: str, mode: str, md5_bins: int = 1_000_000) -> int:
    """The hash of a key's bytes: UTF-8, and lone surrogates U+DC80..U+DCFF (a raw value's
    bytes that are not UTF-8, decoded with errors="surrogateescape") back to those bytes."""
    return hash_bytes(text.encode("utf-8", "surrogateescape"), mode, md5_bins)


def hash_bytes(data: bytes, mode: str, md5_bins: int = 1_000_000) -> int:
    """The hash of a key's bytes."""
    if mode == "md5":
        return int.from_bytes(hashlib.md5(data).digest(), "big") % (md5_bins - 1) + 1
    if mode == "xxh64":
        return xxhash.xxh64_intdigest(data)
    raise ValueError(f"unknown hash mode {mode!r}; use 'xxh64' or 'md5'")


def hash_codes(field: int, codes: np.ndarray, mode: str, md5_bins: int,
               fallback_text: dict) -> np.ndarray:
    """Hashes of the keys of `codes` (one field), as uint64."""
    codes = np.asarray(codes, dtype=np.int64)
    hexadecimal = (codes >= 0) & (codes < parse.CAT_MISSING) if field >= schema.NUM_INT_FIELDS \
        else np.zeros(len(codes), dtype=bool)
    hashes = np.empty(len(codes), dtype=np.uint64)
    hashes[hexadecimal] = [hash_bytes(data, mode, md5_bins)
                           for data in hex_keys(field, codes[hexadecimal]).tolist()]
    others = np.flatnonzero(~hexadecimal)
    hashes[others] = [hash_key(key(field, int(code), fallback_text), mode, md5_bins)
                      for code in codes[others]]
    return hashes


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_keys(field: int, codes: np.ndarray) -> np.ndarray:
    """key(field, code) as bytes for 8-hex-digit categorical codes, built for all codes at once
    (most of a vocabulary; one f-string per value took most of stage 03's set-up)."""
    prefix = np.frombuffer(f"{schema.FIELD_NAMES[field]}-".encode(), dtype=np.uint8)
    shifts = np.arange(28, -1, -4, dtype=np.int64)
    digits = _HEX_DIGITS[(codes[:, None] >> shifts) & 15]
    text = np.concatenate([np.broadcast_to(prefix, (len(codes), len(prefix))), digits], axis=1)
    return np.ascontiguousarray(text).view(f"S{text.shape[1]}").ravel()
