"""Chunk key/values in tiers: RAM (LRU), memory-mapped files on disk (LRU under a byte budget),
and recompute on a miss.

Entries are content-addressed: the key hashes the base model, the encoding settings that do not
depend on any adapter (chunk token limit, storage form) and the chunk's text, so every index
version, adapter and process over the same base model shares them, and a new index version adds
only its new chunks. Each disk entry is one safetensors file, read back memory-mapped.

Storage forms (`fusion.chunk_kv_dtype`): `auto` keeps the model's own dtype; `bfloat16` halves a
float32 model's bytes; `int8` keeps each head's key or value vector at each token as int8 with one
float16 scale (absmax / 127), about a quarter of float32. A freshly encoded chunk goes through
the same packing before it is used, so every tier returns identical tensors.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from components.adapters.chunk_kv import ChunkKV

Encoder = Callable[[list[str]], list[ChunkKV]]
STORAGE_FORMS = ("auto", "bfloat16", "int8")


def store_model_id(config: object) -> str:
    """The base model's part of every entry key: its path or hub id and its weights' dtype."""
    return f"{getattr(config, '_name_or_path', '')}:{getattr(config, 'dtype', '')}"


def entry_key(model_id: str, chunk_tokens: int, text: str, form: str = "auto") -> str:
    """The content address of one chunk's key/values."""
    parts = [model_id, str(chunk_tokens), text] + ([form] if form != "auto" else [])
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _pack(t: torch.Tensor, form: str) -> dict[str, torch.Tensor]:
    if form == "bfloat16":
        return {"": t.to(torch.bfloat16)}
    if form == "int8":
        scale = (t.abs().amax(dim=-1, keepdim=True).float() / 127).clamp_min(1e-8)
        return {"": torch.round(t.float() / scale).to(torch.int8), ".scale": scale.to(torch.float16)}
    return {"": t}


def _unpack(tensors: dict, name: str, form: str, dtype: torch.dtype) -> torch.Tensor:
    if form == "int8":
        return (tensors[name].float() * tensors[f"{name}.scale"].float()).to(dtype)
    return tensors[name].to(dtype)


def to_tensors(kv: ChunkKV, form: str = "auto") -> dict[str, torch.Tensor]:
    """The tensors a disk entry holds: `k.<layer>` and `v.<layer>` (plus `.scale` for int8)."""
    return {
        f"{kind}.{i}{suffix}": packed.contiguous()
        for kind, ts in (("k", kv.keys), ("v", kv.values))
        for i, t in enumerate(ts)
        for suffix, packed in _pack(t, form).items()
    }


def from_tensors(tensors: dict, form: str = "auto", dtype: torch.dtype | None = None) -> ChunkKV:
    """A ChunkKV in `dtype` (default: as stored) from a disk entry's tensors."""
    layers = sum(1 for name in tensors if name.startswith("k.") and not name.endswith(".scale"))
    dtype = dtype or tensors["k.0"].dtype

    def unpacked(kind: str) -> tuple[torch.Tensor, ...]:
        return tuple(_unpack(tensors, f"{kind}.{i}", form, dtype) for i in range(layers))

    return ChunkKV(unpacked("k"), unpacked("v"))


def stored_form(kv: ChunkKV, form: str) -> ChunkKV:
    """`kv` as it reads back from storage in `form` (what every tier then returns)."""
    if form == "auto":
        return kv
    return from_tensors(to_tensors(kv, form), form, kv.keys[0].dtype)


@dataclass
class TierCounters:
    """Hits and misses per tier (exported by the service's /metrics)."""

    ram_hits: int = 0
    disk_hits: int = 0
    computed: int = 0
    disk_evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict, for metrics."""
        return dict(vars(self))


@dataclass
class KVStore:
    """Chunk key/values by text: RAM first, then `folder` on disk, else `encode` them."""

    model_id: str
    chunk_tokens: int
    encode: Encoder
    form: str = "auto"
    dtype: torch.dtype | None = None  # the model's key/value dtype (what every tier returns)
    folder: Path | None = None
    ram_bytes: int = 256 * 2**20
    disk_bytes: int = 8 * 2**30
    counters: TierCounters = field(default_factory=TierCounters)
    _ram: OrderedDict[str, ChunkKV] = field(default_factory=OrderedDict)
    _ram_used: int = 0
    _disk_used: int | None = None  # bytes under `folder`, read once and then kept up to date

    def __post_init__(self) -> None:
        if self.form not in STORAGE_FORMS:
            raise ValueError(f"chunk_kv_dtype must be one of {STORAGE_FORMS}, got {self.form!r}")

    def key(self, text: str) -> str:
        """Cache key of a chunk text for this model, chunk length and fusion form."""
        return entry_key(self.model_id, self.chunk_tokens, text, self.form)

    def use_folder(self, folder: Path, disk_bytes: int) -> None:
        """Keep entries on disk under `folder` too, within `disk_bytes`."""
        self.folder, self.disk_bytes, self._disk_used = Path(folder), disk_bytes, None

    def get(self, texts: list[str]) -> list[ChunkKV]:
        """Each text's key/values, from the first tier that has them; misses are encoded in one batch."""
        keys = [self.key(t) for t in texts]
        found: dict[str, ChunkKV] = {}
        for key in dict.fromkeys(keys):
            kv = self._from_ram(key) or self._from_disk(key)
            if kv is not None:
                found[key] = kv
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            for key, encoded in zip(missing, self.encode(list(missing.values())), strict=True):
                self.dtype = self.dtype or encoded.keys[0].dtype
                kv = stored_form(encoded, self.form)
                self.counters.computed += 1
                self._to_disk(key, kv)
                self._to_ram(key, kv)
                found[key] = kv
        return [found[k] for k in keys]

    def fill(self, texts: list[str], batch_size: int = 8, desc: str = "chunk key/values") -> dict[str, int]:
        """Put every text in the disk tier (encoding those it lacks, in batches, with a progress
        bar); what it found already there and what it encoded. Needs `folder`."""
        from tqdm.auto import tqdm

        if self.folder is None:
            raise ValueError("KVStore.fill needs a folder (use_folder)")
        unique = list(dict.fromkeys(texts))
        keys = [self.key(t) for t in unique]
        todo = [t for t, k in zip(unique, keys, strict=True) if not self._path(k).exists()]
        before = self.counters.computed
        for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch", disable=not todo):
            self.get(todo[start : start + batch_size])
            self._ram.clear()  # a fill passes through RAM only on its way to disk
            self._ram_used = 0
        return {
            "chunks": len(unique),
            "present": len(unique) - len(todo),
            "encoded": self.counters.computed - before,
        }

    def forget(self, texts: list[str]) -> int:
        """Drop these chunks from every tier (e.g. removed from every live index version)."""
        gone = 0
        for key in {self.key(t) for t in texts}:
            if key in self._ram:
                self._ram_used -= self._ram.pop(key).nbytes
                gone += 1
            path = self._path(key)
            if path is not None and path.exists():
                self._unlink(path)
                gone += 1
        return gone

    def disk_usage(self) -> int:
        """Bytes of the entries on disk."""
        return self.disk_entries()[1]

    def disk_entries(self) -> tuple[int, int]:
        """How many chunks the disk tier holds and their bytes (one listing of the folder)."""
        sizes = [p.stat().st_size for p in self._files()]
        return len(sizes), sum(sizes)

    # -- tiers -----------------------------------------------------------------------------------
    def _from_ram(self, key: str) -> ChunkKV | None:
        kv = self._ram.get(key)
        if kv is not None:
            self._ram.move_to_end(key)
            self.counters.ram_hits += 1
        return kv

    def _to_ram(self, key: str, kv: ChunkKV) -> None:
        if kv.nbytes > self.ram_bytes:
            return
        self._ram[key] = kv
        self._ram_used += kv.nbytes
        while self._ram_used > self.ram_bytes:
            self._ram_used -= self._ram.popitem(last=False)[1].nbytes

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else Path(self.folder) / key[:2] / f"{key}.safetensors"

    def _files(self) -> list[Path]:
        return [] if self.folder is None else list(Path(self.folder).glob("*/*.safetensors"))

    def _used_on_disk(self) -> int:
        if self._disk_used is None:
            self._disk_used = self.disk_usage()
        return self._disk_used

    def _unlink(self, path: Path) -> None:
        self._disk_used = self._used_on_disk() - path.stat().st_size
        path.unlink()

    def _from_disk(self, key: str) -> ChunkKV | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        kv = from_tensors(load_file(str(path)), self.form, self.dtype)
        os.utime(path)  # recency for eviction
        self.counters.disk_hits += 1
        self._to_ram(key, kv)
        return kv

    def _to_disk(self, key: str, kv: ChunkKV) -> None:
        path = self._path(key)
        if path is None or kv.nbytes > self.disk_bytes:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        used = self._used_on_disk() - (path.stat().st_size if path.exists() else 0)
        partial = path.with_suffix(".partial")
        save_file(to_tensors(kv, self.form), str(partial))
        partial.replace(path)  # readers never see half a file
        self._disk_used = used + path.stat().st_size
        self._evict_disk()

    def _evict_disk(self) -> None:
        """Remove the least recently used files until the folder fits `disk_bytes` (the folder is
        listed only when it is over)."""
        if self._used_on_disk() <= self.disk_bytes:
            return
        files = sorted(self._files(), key=lambda p: p.stat().st_mtime)
        while files and self._used_on_disk() > self.disk_bytes:
            self._unlink(files.pop(0))
            self.counters.disk_evictions += 1
