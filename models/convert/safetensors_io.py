"""safetensors files without the safetensors package.

Format: 8 bytes little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}} (optional "__metadata__": {str: str}), then the raw little-endian
data; offsets are relative to the end of the header.

SafetensorsFile validates the whole header when opened (so a truncated or corrupt file fails
before any work, naming the file) and reads one tensor at a time through a read-only memory map,
so converting a multi-gigabyte checkpoint holds one tensor in memory, not the file.
"""
import json
import os
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file (the message names the file)."""


_DTYPES = {
    "F64": (np.dtype("<f8"), 8), "F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2), "I64": (np.dtype("<i8"), 8), "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2), "I8": (np.dtype("i1"), 1), "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}
_FLOATS = ("F64", "F32", "F16", "BF16")
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise SafetensorsError(f"{path}: truncated: {size} bytes, shorter than the "
                                           f"8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER or 8 + n > size:
                    raise SafetensorsError(f"{path}: truncated or not a safetensors file: header "
                                           f"length {n} but the file has {size} bytes")
                raw = fh.read(n)
        except OSError as e:
            raise SafetensorsError(f"{path}: cannot read: {e.strerror}") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: the JSON header does not parse ({e})") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: the JSON header is not an object")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        data_len = size - self.data_start
        self.entries: Dict[str, Tuple[str, List[int], int, int]] = {}
        for name, e in header.items():
            try:
                dtype, shape, (begin, end) = e["dtype"], list(e["shape"]), e["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"{path}: tensor '{name}': malformed header entry {e!r}") from None
            if dtype not in _DTYPES:
                raise SafetensorsError(f"{path}: tensor '{name}': dtype {dtype} is not supported")
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise SafetensorsError(f"{path}: tensor '{name}': bad shape {shape}")
                count *= d
            if not (isinstance(begin, int) and isinstance(end, int)) or \
                    end - begin != count * _DTYPES[dtype][1] or begin < 0:
                raise SafetensorsError(f"{path}: tensor '{name}': data_offsets [{begin}, {end}] do "
                                       f"not hold {dtype} {shape}")
            if end > data_len:
                raise SafetensorsError(f"{path}: truncated: tensor '{name}' ends at byte "
                                       f"{self.data_start + end}, the file has {size}")
            self.entries[name] = (dtype, shape, begin, end)
        self._map: Optional[np.memmap] = None

    def keys(self) -> List[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> List[int]:
        return list(self.entries[name][1])

    def dtype(self, name: str) -> str:
        return self.entries[name][0]

    def get(self, name: str, float32: bool = True) -> torch.Tensor:
        """The tensor `name`, copied out of the file (float types converted to float32)."""
        dtype, shape, begin, end = self.entries[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._map[self.data_start + begin: self.data_start + end]
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype][0]).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dtype in _FLOATS and float32:
            arr = arr.astype(np.float32)
        else:
            arr = arr.copy()
        return torch.from_numpy(np.ascontiguousarray(arr))

    def close(self) -> None:
        self._map = None


def load_all(path: str) -> Dict[str, torch.Tensor]:
    """Every tensor of a (small) file, for tests."""
    f = SafetensorsFile(path)
    return {k: f.get(k, float32=False) for k in f.keys()}


def save(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes tensors (F32/F16/I64/...) in the safetensors format (tests make broken copies with it)."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.float64: "F64", torch.int64: "I64",
             torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL", torch.int8: "I8"}
    header: Dict[str, object] = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for b in blobs:
            fh.write(b)
