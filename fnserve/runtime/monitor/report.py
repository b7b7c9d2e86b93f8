"""The ``GET /monitor`` document, and :func:`merge` for a gateway in front of several replicas.

Per function and version: the window, and per feature the reference and live shares over the
same bins, the live counts, the scores and whether they cross their thresholds::

    {"functions": {"recs": {"versions": {"3": {
        "reference": true, "note": null,
        "window": {"seconds": 300, "count": 10000, "samples": 812, "min_samples": 100},
        "features": [{"name": "hotel_price", "role": "input", "type": "numeric",
                      "psi": 0.01, "js": 0.03, "psi_threshold": 0.2, "js_threshold": 0.1,
                      "drifted": false, "bins": ["<21.5", "21.5-64", ...],
                      "reference": [...], "live": [...], "counts": [...],
                      "missing_share": 0.0, "unknown_share": 0.0}]}}}}}

``missing_share`` is the share of window instances without a value (NaN, or an output the model
did not return); ``unknown_share`` the share outside what the reference knows (categorical: the
``other`` bin; numbers and tensors: the under- and overflow bins).

Merging sums the counts (and the samples and missing instances) of each version's features over
the replicas and computes the shares and scores again from the sums; averaging scores would be
wrong, since PSI is not linear in the counts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from fnserve.runtime.monitor.config import MonitorConfig
from fnserve.runtime.monitor.drift import js_distance, psi, shares


def feature_entry(
    *,
    name: str,
    role: str,
    kind: str,
    bins: list[str],
    reference: list[float] | None,
    counts: list[int],
    missing: int,
    outside: int,
    defaulted: int = 0,
    samples: int,
    min_samples: int,
    psi_threshold: float,
    js_threshold: float,
) -> dict[str, Any]:
    """One feature's entry; scores are null without a reference or without live values."""
    live = shares(counts)
    score_psi = score_js = None
    if reference is not None and sum(counts) > 0:
        score_psi, score_js = round(psi(reference, live), 6), round(js_distance(reference, live), 6)
    drifted = (
        score_psi is not None
        and score_js is not None
        and samples >= min_samples
        and (score_psi > psi_threshold or score_js > js_threshold)
    )
    return {
        "name": name,
        "role": role,
        "type": kind,
        "psi": score_psi,
        "js": score_js,
        "psi_threshold": psi_threshold,
        "js_threshold": js_threshold,
        "drifted": bool(drifted),
        "bins": bins,
        "reference": reference,
        "live": [round(float(s), 6) for s in live],
        "counts": [int(c) for c in counts],
        "missing_share": round(missing / samples, 9) if samples else 0.0,
        "unknown_share": round(outside / samples, 9) if samples else 0.0,
        "defaulted_share": round(defaulted / samples, 9) if samples else 0.0,
    }


def window_entry(config: MonitorConfig, samples: int) -> dict[str, Any]:
    return {
        "seconds": config.window_s,
        "count": config.window_count,
        "samples": samples,
        "min_samples": config.min_samples,
    }


def merge(payloads: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several replicas' ``/monitor`` documents as one: counts summed, scores recomputed.

    >>> one = {"functions": {"f": {"versions": {"1": {"reference": True, "note": None,
    ...     "window": {"seconds": 60, "count": 100, "samples": 10, "min_samples": 5}, "features": [
    ...     {"name": "x", "role": "input", "type": "numeric", "psi": 0.0, "js": 0.0,
    ...      "psi_threshold": 0.2, "js_threshold": 0.1, "drifted": False, "bins": ["<0", ">0"],
    ...      "reference": [0.5, 0.5], "live": [1.0, 0.0], "counts": [10, 0],
    ...      "missing_share": 0.0, "unknown_share": 0.0}]}}}}}
    >>> two = copy.deepcopy(one)
    >>> two["functions"]["f"]["versions"]["1"]["features"][0]["counts"] = [0, 10]
    >>> merged = merge([one, two])["functions"]["f"]["versions"]["1"]
    >>> merged["window"]["samples"], merged["features"][0]["counts"], merged["features"][0]["psi"]
    (20, [10, 10], 0.0)
    """
    out: dict[str, Any] = {"functions": {}}
    raw: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # summed counts per feature
    for payload in payloads:
        for name, function in payload.get("functions", {}).items():
            versions = out["functions"].setdefault(name, {"versions": {}})["versions"]
            for version, entry in function.get("versions", {}).items():
                if version in versions:
                    versions[version]["window"]["samples"] += entry["window"]["samples"]
                else:
                    versions[version] = {**copy.deepcopy(entry), "features": []}
                merged = versions[version]
                samples = entry["window"]["samples"]
                for f in entry.get("features", []):
                    key = (name, version, f["name"], f["role"])
                    # shares times samples are whole numbers: the replica's counts, recovered exactly
                    missing, outside, defaulted = (
                        round(f.get(k, 0.0) * samples)
                        for k in ("missing_share", "unknown_share", "defaulted_share")
                    )
                    if key not in raw:
                        raw[key] = {
                            **f,
                            "counts": list(f["counts"]),
                            "_missing": missing,
                            "_outside": outside,
                            "_defaulted": defaulted,
                        }
                        merged["features"].append(raw[key])
                    elif raw[key]["bins"] == f["bins"]:  # another reference for this version: left out
                        total = raw[key]
                        total["counts"] = [a + b for a, b in zip(total["counts"], f["counts"], strict=True)]
                        total["_missing"] += missing
                        total["_outside"] += outside
                        total["_defaulted"] += defaulted
    for function in out["functions"].values():
        for entry in function["versions"].values():
            entry["features"] = [_rescore(f, entry["window"]) for f in entry["features"]]
    return out


def _rescore(f: Mapping[str, Any], window: Mapping[str, Any]) -> dict[str, Any]:
    return feature_entry(
        name=f["name"],
        role=f["role"],
        kind=f["type"],
        bins=f["bins"],
        reference=f["reference"],
        counts=f["counts"],
        missing=f["_missing"],
        outside=f["_outside"],
        defaulted=f["_defaulted"],
        samples=window["samples"],
        min_samples=int(window.get("min_samples", 0)),
        psi_threshold=f["psi_threshold"],
        js_threshold=f["js_threshold"],
    )
