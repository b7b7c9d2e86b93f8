"""Instances to send: given (a JSON file, ``-d key=value``) or generated from the function's schema.

The schema is what ``GET /functions`` serves for each input: its type, choices, bounds and, for
tensors and images, dtype and shape. Generated values are plausible (within bounds, one of the
choices, the right shape) and random but reproducible (seeded); images are small PNGs. Optional
inputs are generated too, so that every input's decoding is part of the measurement.

    >>> schema = [{"name": "x", "type": "float", "required": True, "ge": 0, "le": 1},
    ...           {"name": "season", "type": "category", "required": True, "choices": ["winter"]}]
    >>> [sorted(i) for i in InputSpec().instances(schema, 2)]
    [['season', 'x'], ['season', 'x']]
    >>> InputSpec(overrides={"x": "0.5"}).instances(schema, 1)
    [{'x': 0.5, 'season': 'winter'}]
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fnserve.bench.plan import BenchError

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
FREE_DIM = 4  # the length of a tensor axis the schema leaves open
FREE_IMAGE = 32  # the side of a generated image whose size the schema leaves open


@dataclass(frozen=True)
class InputSpec:
    """Where instances come from: ``given`` ones (else generated), with ``overrides`` set in each."""

    given: tuple[Mapping[str, Any], ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict)  # raw text, converted by the schema
    seed: int = 0

    @classmethod
    def from_options(cls, data: Path | None, pairs: Sequence[str]) -> InputSpec:
        """From ``--data FILE`` (one instance, a list, or ``{"instances": [...]}``) and ``-d`` pairs."""
        overrides = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise BenchError(f"-d {pair!r}: expected KEY=VALUE")
            overrides[key] = value
        return cls(tuple(read_instances(data)) if data else (), overrides)

    def instances(self, inputs: Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
        """``n`` instances (the given ones, cycled; else generated) with the overrides applied."""
        fields = {f["name"]: f for f in inputs}
        unknown = sorted(set(self.overrides) - set(fields))
        if unknown:
            raise BenchError(f"-d {unknown[0]}: the function has no such input; it takes {', '.join(fields)}")
        fixed = {k: convert(fields[k], v) for k, v in self.overrides.items()}
        rng = np.random.default_rng(self.seed)
        if self.given:
            base = [dict(self.given[i % len(self.given)]) for i in range(n)]
        else:
            base = [{f["name"]: generate(f, rng) for f in inputs} for _ in range(n)]
        return [{**instance, **fixed} for instance in base]


def read_instances(path: Path) -> list[Mapping[str, Any]]:
    try:
        body = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BenchError(f"--data {path}: cannot read JSON instances: {exc}") from None
    if isinstance(body, dict) and isinstance(body.get("instances"), list):
        body = body["instances"]
    instances = body if isinstance(body, list) else [body]
    if not instances or not all(isinstance(i, dict) for i in instances):
        raise BenchError(f"--data {path}: expected an object, a list of objects or {{'instances': [...]}}")
    return instances


def generate(spec: Mapping[str, Any], rng: np.random.Generator) -> Any:
    """A plausible random value for one input, described as ``GET /functions`` describes it."""
    kind = spec["type"]
    if kind == "category":
        return str(rng.choice(spec["choices"]))
    if kind in ("int", "float"):
        low, high = _bounds(spec.get("ge"), spec.get("le"))
        if kind == "int":
            return int(rng.integers(math.ceil(low), math.floor(high) + 1))
        return round(float(rng.uniform(low, high)), 4)
    if kind == "bool":
        return bool(rng.random() < 0.5)
    if kind == "tensor":
        shape = [d if d is not None else FREE_DIM for d in spec["shape"]]
        return _tensor(spec.get("dtype", "float32"), shape, rng).tolist()
    if kind == "image":
        height, width = (d if d is not None else FREE_IMAGE for d in spec["shape"][:2])
        return png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return str(rng.choice(WORDS))


def _bounds(ge: float | None, le: float | None) -> tuple[float, float]:
    low = ge if ge is not None else (le - 100 if le is not None else 0.0)
    return low, le if le is not None else low + 100


def _tensor(dtype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 10, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype).round(4)


def png(pixels: np.ndarray) -> bytes:
    """Encode uint8 RGB pixels as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def convert(spec: Mapping[str, Any], text: str) -> Any:
    """A ``-d`` value in the input's type (as JSON would carry it); ``@FILE`` is the file's bytes."""
    kind, name = spec["type"], spec["name"]
    try:
        if text.startswith("@"):
            return Path(text[1:]).read_bytes()
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return text.strip().lower() in ("1", "true", "yes", "on")
        if kind == "tensor":
            return [float(v) for v in text.split(",")]
    except (OSError, ValueError) as exc:
        raise BenchError(f"-d {name}={text}: not a valid {kind}: {exc}") from None
    return text
