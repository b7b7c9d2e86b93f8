"""How one input or output is binned, so that a training reference and live traffic count alike.

A feature is one column seen through fixed bins:

* ``numeric`` (int and float inputs, number outputs): quantile bins of the reference. With edges
  ``e0 < e1 < ... < ek`` (the reference's minimum, its deciles, its maximum) there are ``k + 2``
  bins: an underflow ``< e0``, the ``k`` bins ``[e(i-1), e(i))`` (the last one closed) and an
  overflow ``> ek``;
* ``categorical`` (str, ``Literal``, ``Enum``, bool): the reference's most frequent values, one bin
  each, and a last ``other`` bin for every value outside that vocabulary;
* ``tensor`` (tensors and images): a summary statistic of each instance (``mean`` or ``std`` of
  all its values: a darker photo has a lower mean), binned like a number.

Binning is vectorised: ``searchsorted`` for numbers, one ``dict.get`` per value through ``map``
(a C loop) for strings, one pass for a tensor's mean and std; the caller adds the indices up
with one ``bincount`` per batch.

>>> price = Feature("price", "input", "numeric", "price", edges=(10.0, 20.0, 30.0))
>>> price.labels()
['<10', '10-20', '20-30', '>30']
>>> price.indices(np.array([5.0, 10.0, 25.0, 30.0, 31.0, np.nan])).tolist()
[0, 1, 2, 2, 3, 4]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

QUANTILES = 10  # numeric bins between the reference's minimum and maximum
MAX_VALUES = 50  # most categorical values kept by name; the rest count as "other"
TENSOR_STATS = ("mean", "std")  # per-instance summaries of a tensor or image
OTHER = "other"
CHUNK = 512  # instances of a tensor column summarized at once


@dataclass(frozen=True)
class Feature:
    """One binned column. ``source`` is the input's name, an output's key, or "" (a single output)."""

    name: str  # as shown: "hotel_price", "photo.mean", "output", "sea_view"
    role: str  # "input" or "output"
    type: str  # "numeric", "categorical" or "tensor"
    source: str
    stat: str = ""  # tensors: "mean" or "std"
    edges: tuple[float, ...] = ()  # numeric and tensor: e0 < ... < ek
    values: tuple[str, ...] = ()  # categorical: the vocabulary

    @property
    def bins(self) -> int:
        """Bins of the distribution (the missing count is kept apart, in slot ``bins``)."""
        return len(self.values) + 1 if self.type == "categorical" else len(self.edges) + 1

    def labels(self) -> list[str]:
        if self.type == "categorical":
            return [*self.values, OTHER]
        e = [f"{x:.4g}" for x in self.edges]
        return [f"<{e[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(e)), f">{e[-1]}"]

    def outside(self, counts: np.ndarray) -> int:
        """Counts outside what the reference knows: the "other" bin, or under- and overflow."""
        if self.type == "categorical":
            return int(counts[-1])
        return int(counts[0] + counts[-1])

    def indices(self, column: Any, summary: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The bin of every value of ``column`` (``bins`` for a missing one), as int64. A tensor
        column's :func:`summaries` may be passed in, computed once for its mean and std features."""
        if self.type == "categorical":
            return self._categories(column)
        if self.type == "tensor":
            return self._bin_numbers((summary or summaries(column))[self.stat])
        return self._bin_numbers(_floats(column))

    def _bin_numbers(self, values: np.ndarray) -> np.ndarray:
        edges = self._search_edges
        out = np.searchsorted(edges, values, side="right")
        out[np.isnan(values)] = self.bins  # missing
        return out.astype(np.int64, copy=False)

    @property
    def _search_edges(self) -> np.ndarray:
        cached = self.__dict__.get("_edges_array")
        if cached is None:
            # The last bin is closed (the reference's maximum belongs in it, not in the overflow).
            cached = np.array([*self.edges[:-1], np.nextafter(self.edges[-1], np.inf)], dtype=np.float64)
            object.__setattr__(self, "_edges_array", cached)
        return cached

    def _categories(self, column: Any) -> np.ndarray:
        index = self.__dict__.get("_index")
        if index is None:
            index = {v: i for i, v in enumerate(self.values)}
            index.update(
                {True: index.get("true", len(self.values)), False: index.get("false", len(self.values))}
            )
            object.__setattr__(self, "_index", index)
        other = len(self.values)
        n = len(column)
        return np.fromiter(map(index.get, column, itertools.repeat(other, n)), dtype=np.int64, count=n)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "type": self.type, "source": self.source}
        if self.stat:
            out["stat"] = self.stat
        if self.type == "categorical":
            out["values"] = list(self.values)
        else:
            out["edges"] = list(self.edges)
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Feature:
        """A feature as a reference file holds it; ``ValueError`` saying what is wrong."""
        kind = doc.get("type")
        if kind not in ("numeric", "categorical", "tensor") or doc.get("role") not in ("input", "output"):
            raise ValueError(f"feature {doc.get('name')!r}: bad type or role")
        feature = cls(
            name=str(doc["name"]),
            role=str(doc["role"]),
            type=str(kind),
            source=str(doc.get("source", "")),
            stat=str(doc.get("stat", "")),
            edges=tuple(float(x) for x in doc.get("edges", ())),
            values=tuple(str(v) for v in doc.get("values", ())),
        )
        if kind != "categorical" and (not feature.edges or list(feature.edges) != sorted(set(feature.edges))):
            raise ValueError(f"feature {feature.name!r}: edges must be increasing numbers")
        return feature


SAMPLED_VALUES = 4096  # values per instance a tensor's summary reads at most


def summaries(column: Any) -> dict[str, np.ndarray]:
    """Per instance of a tensor/image column, the ``mean`` and the ``std`` of its values.

    One pass over a float32 copy of an even sample of each instance's values (sums and sums of
    squares; a dot product per row), in chunks so a training set of photos is never copied whole.
    """
    if not isinstance(column, np.ndarray) or column.ndim < 1:  # images of free size: one by one
        parts = [summaries(np.asarray(v)[None]) for v in column]
        return {s: np.array([p[s][0] for p in parts], dtype=np.float64) for s in TENSOR_STATS}
    flat = column.reshape(len(column), -1)
    # A large instance (a photo) is summarised from an even sample of its values: a strided view,
    # at most SAMPLED_VALUES of them, the stride never a multiple of 3 so that interleaved colour
    # channels are all visited. The reference is summarised the same way, so both see one statistic.
    step = max(1, flat.shape[1] // SAMPLED_VALUES)
    if step > 1 and step % 3 == 0:
        step += 1
    flat = flat[:, ::step]
    width = max(flat.shape[1], 1)
    means, squares = [], []
    for start in range(0, len(flat), CHUNK):
        chunk = flat[start : start + CHUNK].astype(np.float32)
        means.append(chunk.sum(axis=1).astype(np.float64) / width)
        squares.append(np.einsum("ij,ij->i", chunk, chunk).astype(np.float64) / width)
    mean = np.concatenate(means) if means else np.zeros(0)
    square = np.concatenate(squares) if squares else np.zeros(0)
    return {"mean": mean, "std": np.sqrt(np.maximum(square - mean * mean, 0.0))}


def _floats(column: Any) -> np.ndarray:
    values = np.asarray(column)
    if values.dtype.kind not in "iufb":
        values = np.array([np.nan if v is None else v for v in values.tolist()], dtype=np.float64)
    return values.astype(np.float64, copy=False).reshape(-1)


def infer(name: str, role: str, source: str, column: Any) -> list[Feature]:
    """The features of one training column, binned by its own distribution (its type read from
    the data: numbers, strings or booleans, or arrays of more than one value per instance)."""
    if hasattr(column, "numpy") and not isinstance(column, np.ndarray):  # a framework tensor
        column = column.numpy()
    values = np.asarray(column) if not isinstance(column, list) else np.asarray(column, dtype=object)
    if values.ndim > 1:
        summary = summaries(values)
        return [
            _numeric(f"{name}.{stat}", role, source, summary[stat], "tensor", stat) for stat in TENSOR_STATS
        ]
    if values.dtype.kind in "iuf":
        return [_numeric(name, role, source, values.astype(np.float64), "numeric", "")]
    return [_categorical(name, role, source, values)]


def _numeric(name: str, role: str, source: str, values: np.ndarray, kind: str, stat: str) -> Feature:
    finite = values[np.isfinite(values)]
    if not len(finite):
        raise ValueError(f"reference column {name!r} holds no finite numbers")
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, QUANTILES + 1)))
    return Feature(name, role, kind, source, stat, edges=tuple(float(e) for e in edges))


def _categorical(name: str, role: str, source: str, values: np.ndarray) -> Feature:
    if values.dtype.kind == "b":
        vocabulary: Sequence[str] = ["false", "true"]
    else:
        found, counts = np.unique(np.asarray([str(v) for v in values.tolist()]), return_counts=True)
        top = np.argsort(-counts, kind="stable")[:MAX_VALUES]
        vocabulary = [str(found[i]) for i in top]
    return Feature(name, role, "categorical", source, values=tuple(vocabulary))
