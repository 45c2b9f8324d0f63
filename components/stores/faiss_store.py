"""FAISS backend: any index factory string, an id map for upsert/delete, snapshots on disk."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from typing_extensions import override

from components.stores.base import STORES, Hit, StoreInputError, VectorStore, check_batch, matches

COMPACT_SHARE = 0.25
"""Rebuild an index without native removal once this share of its entries is deleted."""
MAX_EF_SEARCH = 4096
SMALL_BATCH = 8
"""Searches of fewer queries run on one thread: FAISS's idle OpenMP workers otherwise spin and
slow down the next query embedding (~3 ms of a ~7 ms MiniLM encode on two cores)."""


@STORES.register("faiss")
class FaissStore(VectorStore):
    """String ids and payloads over a FAISS index built from a factory string (inner product).

    `factory` is any `faiss.index_factory` string: Flat (exact), HNSW32, IVF256,PQ48, IVF256,PQ48,RFlat...
    Types that need training (IVF, PQ) are trained on the first upsert batch. `index_params` is a
    `faiss.ParameterSpace` string applied before the first add and on every load, such as
    "efConstruction=200,efSearch=128" (HNSW) or "nprobe=16,k_factor_rf=4" (IVF with refine).
    Types without native removal (HNSW, refine) keep deleted entries as tombstones that searches
    skip, and are rebuilt once a quarter of their entries are tombstones.
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        index_params: str = "",
        path: str | None = None,
        name: str = "retro",
    ) -> None:
        self.dim, self.factory, self.index_params = dim, factory, index_params
        self.index = self._new_index()
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._tombstones: set[int] = set()
        self._next = 0
        if path and (Path(path) / "faiss.index").exists():
            self._load(Path(path))

    def _new_index(self) -> faiss.Index:
        try:
            core = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            reason = _faiss_reason(err)
            raise StoreInputError(f"invalid FAISS factory string {self.factory!r}: {reason}") from err
        _skip_polysemous_training(core)
        # IVF types keep our integer ids in their lists; an id map over them would go out of step
        # with the lists on removal (the map renumbers, the lists do not)
        index = core if isinstance(core, faiss.IndexIVF) else faiss.IndexIDMap2(core)
        if self.index_params:
            try:
                faiss.ParameterSpace().set_index_parameters(index, self.index_params)
            except RuntimeError as err:
                raise StoreInputError(
                    f"invalid FAISS index_params {self.index_params!r} for {self.factory!r}: "
                    f"{_faiss_reason(err)}"
                ) from err
        return index

    @override
    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        vectors = check_batch(ids, vectors, payloads, self.dim)
        if not len(ids):
            return
        self._train(vectors)
        self.delete([i for i in ids if i in self._int_of])
        int_ids = self._reserve(ids, payloads)
        self.index.add_with_ids(vectors, int_ids)

    def _train(self, vectors: np.ndarray) -> None:
        """Train an untrained type (IVF, PQ) on these vectors; a no-op once trained."""
        if self.index.is_trained:
            return
        try:
            self.index.train(vectors)
        except RuntimeError as err:
            raise StoreInputError(
                f"FAISS index {self.factory!r} could not be trained on {len(vectors)} vectors "
                f"(IVF needs at least as many vectors as lists, PQ at least 256): {_faiss_reason(err)}"
            ) from err

    def _reserve(self, ids: list[str], payloads: list[dict[str, Any]]) -> np.ndarray:
        """Give new string ids the next integer ids and keep their payloads; returns the integers."""
        int_ids = np.arange(self._next, self._next + len(ids), dtype=np.int64)
        self._next += len(ids)
        for sid, iid, payload in zip(ids, int_ids.tolist(), payloads, strict=True):
            self._int_of[sid], self._str_of[iid], self._payloads[sid] = iid, sid, dict(payload)
        return int_ids

    @property
    def mergeable(self) -> bool:
        """True when parts added separately to copies of this index can be merged (Flat, IVF types)."""
        return isinstance(self._core, (faiss.IndexFlat, faiss.IndexIVF))

    @property
    def _core(self) -> faiss.Index:
        """The index under the id map (or the index itself for IVF types, which hold ids)."""
        if isinstance(self.index, faiss.IndexIDMap2):
            return faiss.downcast_index(self.index.index)
        return faiss.downcast_index(self.index)

    def begin_parts(
        self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Start filling this empty store from parts added elsewhere (`finish_parts` merges them).

        Trains on all `vectors` (as one upsert would) and reserves integer ids for `ids`; returns
        the serialized empty, trained index to add parts to and the integer ids, in order.
        """
        vectors = check_batch(ids, vectors, payloads, self.dim)
        if self.index.ntotal or self._int_of:
            raise StoreInputError("parts can only fill an empty FAISS store")
        if not self.mergeable:
            raise StoreInputError(
                f"FAISS {self.factory!r} indexes cannot be merged from parts; Flat and IVF types can"
            )
        self._train(vectors)
        return faiss.serialize_index(self.index), self._reserve(ids, payloads)

    def finish_parts(self, parts: list[faiss.Index]) -> None:
        """Merge parts (copies of the `begin_parts` index, each with its ids added) in order."""
        merged = parts[0]
        if isinstance(merged, faiss.IndexIDMap2):  # Flat: positions under an id map
            for part in parts[1:]:
                faiss.downcast_index(merged.index).merge_from(faiss.downcast_index(part.index), 0)
            faiss.copy_array_to_vector(
                np.concatenate([faiss.vector_to_array(part.id_map) for part in parts]), merged.id_map
            )
            merged.ntotal = merged.index.ntotal
            merged.construct_rev_map()
        else:  # IVF: the lists hold the ids themselves
            for part in parts[1:]:
                merged.merge_from(part, 0)
        if merged.ntotal != len(self._int_of):
            expected = len(self._int_of)
            raise StoreInputError(f"the merged parts hold {merged.ntotal} entries, expected {expected}")
        if self.index_params:
            faiss.ParameterSpace().set_index_parameters(merged, self.index_params)
        self.index = merged

    @override
    def delete(self, ids: list[str]) -> None:
        known = [self._int_of.pop(i) for i in ids if i in self._int_of]
        if not known:
            return
        if isinstance(self._core, (faiss.IndexFlat, faiss.IndexIVF)):
            self.index.remove_ids(np.asarray(known, dtype=np.int64))
        else:  # no (safe) native removal, e.g. HNSW or refine: searches skip them
            self._tombstones.update(known)
        for iid in known:
            self._payloads.pop(self._str_of.pop(iid), None)
        if len(self._tombstones) > COMPACT_SHARE * max(self.index.ntotal, 1):
            self._compact()

    @override
    def search(self, queries: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise StoreInputError(f"queries must have {self.dim} dimensions, got {queries.shape[1]}")
        if self.count() == 0 or k <= 0:
            return [[] for _ in range(len(queries))]
        allowed = None
        if where:
            allowed = [self._int_of[s] for s, p in self._payloads.items() if matches(p, where)]
            if not allowed:
                return [[] for _ in range(len(queries))]
        k_eff = min(k, self.count() if allowed is None else len(allowed))
        if allowed is None and not self._tombstones:
            return self._hits(self._raw_search(queries, k_eff, None))
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        else:
            dead = np.asarray(sorted(self._tombstones), dtype=np.int64)
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
        # a filter keeping a share s of the entries widens the search by 1/s: graph and list
        # walks otherwise run out of candidates that pass the filter
        widen = self.index.ntotal / len(allowed) if allowed is not None else 1.0
        params, filters_inside = _search_params(self._core, widen, selector)
        if filters_inside:
            return self._hits(self._raw_search(queries, k_eff, params))
        # an index type without selector support (e.g. refine): over-fetch, then filter
        keep = set(allowed) if allowed is not None else set(self._str_of)
        return self._hits(self._filtered_search(queries, k_eff, keep, params, widen))

    def _hits(self, rows: list[list[tuple[int, float]]]) -> list[list[Hit]]:
        return [[Hit(self._str_of[i], s, self._payloads[self._str_of[i]]) for i, s in row] for row in rows]

    def _raw_search(self, queries: np.ndarray, k: int, params: Any) -> list[list[tuple[int, float]]]:
        with _threads(1 if len(queries) < SMALL_BATCH else None):
            scores, int_ids = self.index.search(queries, k, params=params)
        live = self._str_of
        return [
            [(i, float(s)) for s, i in zip(rs.tolist(), ri.tolist(), strict=True) if i >= 0 and i in live]
            for rs, ri in zip(scores, int_ids, strict=True)
        ]

    def _filtered_search(
        self, queries: np.ndarray, k: int, keep: set[int], params: Any, widen: float
    ) -> list[list[tuple[int, float]]]:
        depth = min(self.index.ntotal, round(2 * k * widen) + len(self._tombstones))
        while True:
            found = self._raw_search(queries, depth, params)
            rows = [[hit for hit in row if hit[0] in keep][:k] for row in found]
            if all(len(row) >= k for row in rows) or depth >= self.index.ntotal:
                return rows
            depth = min(self.index.ntotal, depth * 4)

    def _compact(self) -> None:
        """Rebuild without tombstones from the stored vectors (retrains IVF/PQ types)."""
        live = sorted(self._str_of)
        try:
            vectors = np.stack([self.index.reconstruct(i) for i in live]) if live else None
        except RuntimeError:
            return  # the type cannot give its vectors back; keep the tombstones
        self.index = self._new_index()
        if vectors is not None:
            self.index.train(vectors)
            self.index.add_with_ids(vectors, np.asarray(live, dtype=np.int64))
        self._tombstones.clear()

    @override
    def count(self) -> int:
        return len(self._int_of)

    @override
    def ids(self) -> list[str]:
        return list(self._int_of)

    @override
    def payload(self, id: str) -> dict[str, Any] | None:
        return self._payloads.get(id)

    @override
    def payloads(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: self._payloads[i] for i in ids if i in self._payloads}

    @override
    def info(self) -> dict[str, Any]:
        return {
            "backend": "faiss",
            "factory": self.factory,
            "index_params": self.index_params,
            "count": self.count(),
            "entries": int(self.index.ntotal),
        }

    @override
    def clone(self, folder: Path, name: str) -> FaissStore:
        other = copy.copy(self)
        other.index = faiss.clone_index(self.index)
        other._int_of, other._str_of = dict(self._int_of), dict(self._str_of)
        other._payloads, other._tombstones = dict(self._payloads), set(self._tombstones)
        return other

    @override
    def drop(self) -> None:
        pass

    @override
    def close(self) -> None:
        pass

    @override
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / "faiss.index"))
        meta = {
            "dim": self.dim,
            "factory": self.factory,
            "index_params": self.index_params,
            "next": self._next,
            "ids": [[s, i] for s, i in self._int_of.items()],
            "tombstones": sorted(self._tombstones),
        }
        (folder / "faiss_meta.json").write_text(json.dumps(meta))
        with (folder / "payloads.jsonl").open("w") as fh:
            for sid, payload in self._payloads.items():
                fh.write(json.dumps({"id": sid, "payload": payload}) + "\n")

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "faiss_meta.json").read_text())
        if meta["dim"] != self.dim:
            raise StoreInputError(f"snapshot at {folder} has dim {meta['dim']}, expected {self.dim}")
        self.factory, self._next = meta["factory"], meta["next"]
        self.index = faiss.read_index(str(folder / "faiss.index"))
        self.index_params = meta.get("index_params", self.index_params)
        if self.index_params:
            faiss.ParameterSpace().set_index_parameters(self.index, self.index_params)
        self._int_of = {s: i for s, i in meta["ids"]}
        self._str_of = {i: s for s, i in self._int_of.items()}
        self._tombstones = set(meta.get("tombstones", []))
        for line in (folder / "payloads.jsonl").read_text().splitlines():
            record = json.loads(line)
            self._payloads[record["id"]] = record["payload"]


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run FAISS with `count` OpenMP threads inside the block (None: leave as is)."""
    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _search_params(index: faiss.Index, widen: float, selector: Any) -> tuple[Any, bool]:
    """Search parameters for `index` widened by `widen`; True when they apply `selector` inside."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIVF):
        nprobe = min(inner.nlist, max(inner.nprobe, round(inner.nprobe * widen)))
        params, inside = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe), True
    elif isinstance(inner, faiss.IndexHNSW):
        ef = min(MAX_EF_SEARCH, max(inner.hnsw.efSearch, round(inner.hnsw.efSearch * widen)))
        params, inside = faiss.SearchParametersHNSW(sel=selector, efSearch=ef), True
    elif isinstance(inner, faiss.IndexFlat):
        params, inside = faiss.SearchParameters(sel=selector), True
    elif isinstance(inner, faiss.IndexRefine):
        base, _ = _search_params(inner.base_index, widen, None)
        params = faiss.IndexRefineSearchParameters(k_factor=inner.k_factor, base_index_params=base)
        params._base = base  # keep the base parameters alive as long as these
        inside = False
    else:
        return None, False
    params._selector = selector  # keep the selector alive as long as the parameters
    return params, inside


def _skip_polysemous_training(index: faiss.Index) -> None:
    """IVF-PQ indexes from the factory train polysemous codes we never search with (~100x slower)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVFPQ):
        index.do_polysemous_training = False
    elif isinstance(index, faiss.IndexRefine):
        _skip_polysemous_training(index.base_index)


def _faiss_reason(err: RuntimeError) -> str:
    """The readable line of a FAISS C++ exception."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else str(err)
