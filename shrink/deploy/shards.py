"""Safetensors shards read one tensor at a time, and written one shard at a time.

`Shards` opens a Hugging Face folder's weights (``model.safetensors``, or the shards an
``model.safetensors.index.json`` names) memory-mapped and checks each file's header against its
size first, so a missing or truncated shard is one clear error before any work. `ShardWriter`
collects cut tensors and writes a shard whenever ``max_bytes`` are held, then names the shards
``model-0000i-of-0000n.safetensors`` with their index, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from ..errors import ShrinkValueError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class Shards:
    """The tensors of a folder's safetensors weights, by name; nothing is read until asked for.

    Tensors are read with plain file reads, not memory-mapped: a mapped shard's pages would count
    in the process's resident memory as they are touched, up to the whole folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (ValueError, KeyError, TypeError) as exc:
                raise ShrinkValueError(f"{str(index)!r} is not a safetensors index (no readable 'weight_map': "
                                       f"{type(exc).__name__}: {exc}); save the model again with save_pretrained")
        elif (self.folder / SINGLE).is_file():
            weight_map = None
        else:
            raise ShrinkValueError(f"{str(self.folder)!r} has no {SINGLE} or {INDEX}: streamed compress reads "
                                   "safetensors weights. Save the model with save_pretrained(folder) (the default "
                                   "writes safetensors).")
        files = sorted(set(weight_map.values())) if weight_map is not None else [SINGLE]
        self.bytes = 0
        self._headers: dict[str, tuple[int, dict]] = {}
        for name in files:
            path = self.folder / name
            if not path.is_file():
                raise ShrinkValueError(f"shard {name!r} listed in {INDEX} is missing from {str(self.folder)!r}; "
                                       "copy the folder again (every shard the index names is needed)")
            size, start, header = _read_header(path)
            self.bytes += size
            self._headers[name] = (start, header)
        if weight_map is None:
            weight_map = {k: SINGLE for k in self._headers[SINGLE][1] if k != "__metadata__"}
        missing = sorted(k for k, f in weight_map.items() if k not in self._headers[f][1])
        if missing:
            raise ShrinkValueError(f"{INDEX} places {missing[:3]} in shards that do not hold them; the folder is "
                                   "damaged: copy or save it again")
        self.where = dict(weight_map)
        self.read = 0  # bytes read so far

    def keys(self) -> list[str]:
        return list(self.where)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def _entry(self, name: str) -> tuple[int, dict]:
        start, header = self._headers[self.where[name]]
        return start, header[name]

    def get(self, name: str, rows: int | None = None) -> torch.Tensor:
        """The tensor ``name`` (only its first ``rows`` along dim 0 if given), read from its shard into memory
        of its own."""
        start, entry = self._entry(name)
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ShrinkValueError(f"{name!r} is stored as {entry['dtype']}, which streamed compress does not read "
                                   f"(it reads {sorted(_DTYPES)})")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if rows is not None and shape and rows < shape[0]:
            end = begin + (end - begin) // shape[0] * rows  # rows are contiguous: read a prefix
            shape = (rows, *shape[1:])
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        raw = torch.empty(end - begin, dtype=torch.uint8)  # not zero-filled, unlike a bytearray
        with open(self.folder / self.where[name], "rb") as f:
            f.seek(start + begin)
            if f.readinto(memoryview(raw.numpy())) != end - begin:
                raise _truncated(self.folder / self.where[name], f.tell(), start + end)
        self.read += end - begin
        return raw.view(dtype).reshape(shape)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of ``name``, read from its shard's header."""
        return tuple(self._entry(name)[1]["shape"])

    def dtype(self) -> torch.dtype:
        """The floating dtype most of the weights are stored in (by count of tensors)."""
        counts: dict[str, int] = {}
        for name in self.where:
            code = self._entry(name)[1]["dtype"]
            if code in _FLOATS:
                counts[code] = counts.get(code, 0) + 1
        return _DTYPES[max(counts, key=counts.get)] if counts else torch.float32


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_FLOATS = ("F32", "F16", "BF16", "F64")


def _read_header(path: Path) -> tuple[int, int, dict]:
    """(file size, offset of the data, header), after checking the file holds all the data its header describes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _truncated(path, size, 8)
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise _truncated(path, size, 8 + n)
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise ShrinkValueError(f"{str(path)!r} is not a safetensors file (its header does not parse: {exc}); "
                                   "copy or save it again") from exc
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise _truncated(path, size, 8 + n + end)
    return size, 8 + n, header


def _truncated(path: Path, size: int, needed: int) -> ShrinkValueError:
    return ShrinkValueError(f"shard {str(path)!r} is truncated: {size:,} bytes where its header needs {needed:,}. "
                            "An interrupted download or copy leaves this; copy the folder again.")


class ShardWriter:
    """Writes tensors into ``folder`` as shards of about ``max_bytes`` each, then their index."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self._held: dict[str, torch.Tensor] = {}
        self._held_bytes = 0
        self._written: list[tuple[str, list[str]]] = []  # (temporary file name, tensor names)
        self.bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._held or any(name in names for _, names in self._written):
            raise ValueError(f"tensor {name!r} written twice")
        self._held[name] = tensor.detach().contiguous().clone()  # owns its memory: frees the source's
        self._held_bytes += tensor.numel() * tensor.element_size()
        if self._held_bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self._held:
            return
        name = f"part-{len(self._written):05d}.safetensors"
        save_file(self._held, str(self.folder / name), metadata={"format": "pt"})
        self.bytes += (self.folder / name).stat().st_size
        self._written.append((name, list(self._held)))
        self._held, self._held_bytes = {}, 0

    def close(self) -> list[str]:
        """Write what is held, name the shards as Hugging Face does, write the index; the shard names."""
        self.flush()
        total = len(self._written)
        if total == 1:
            (self.folder / self._written[0][0]).rename(self.folder / SINGLE)
            return [SINGLE]
        weight_map, names = {}, []
        for i, (tmp, tensors) in enumerate(self._written):
            final = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
            (self.folder / tmp).rename(self.folder / final)
            names.append(final)
            weight_map.update({t: final for t in tensors})
        index = {"metadata": {"total_size": self.bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / INDEX).write_text(json.dumps(index, indent=2))
        return names
