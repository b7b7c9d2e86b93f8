"""RESULTS.md from one run's results: the table, the machine, and issue 3's four targets.

Everything above the analysis marker is regenerated on each run; the hand-written analysis
below it (why a target is missed, profiles) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "<!-- analysis: written by hand below this line; compare.py keeps it -->"
Run = dict[str, Any]
ENCODED_TAGGER_FORMATS = ("Arrow photo column", "v2 binary")  # JPEG bytes, decoded by the server
# decoded by the client: uint8 pixels in Arrow, or a UINT8 tensor in v2's binary extension
PIXELS_TAGGER_FORMATS = ("Arrow pixels (uint8 tensor)", "v2 binary pixels (UINT8 tensor)")


@dataclass(frozen=True)
class Check:
    what: str
    measured: str
    passed: bool | None  # None: not measurable in this run (a format still pending)


@dataclass(frozen=True)
class Target:
    title: str
    checks: list[Check]
    any_of: bool = False  # met when one check passes (alternative forms), else all must


def ok(runs: list[Run], scenario: str, **match: Any) -> list[Run]:
    return [
        r
        for r in runs
        if r.get("scenario") == scenario
        and r.get("status") in ("ok", "errors")
        and all(r.get(k) == v for k, v in match.items())
    ]


def best(rows: list[Run], key: str = "pred_per_s", lowest: bool = False) -> Run | None:
    if not rows:
        return None
    return min(rows, key=lambda r: r[key]) if lowest else max(rows, key=lambda r: r[key])


def ratio_check(
    what: str,
    value: float | None,
    reference: float | None,
    need: float,
    unit: str,
    per_cpu: tuple[float | None, float | None] = (None, None),
) -> Check:
    """``value / reference >= need``, saying by how much it misses; ``per_cpu``: the same two
    per CPU-second of the server, shown beside it (what other load on the machine barely moves)."""
    if value is None or reference is None or reference == 0:
        return Check(what, "not measured (pending or failed)", None)
    r = value / reference
    text = f"{r:.2f}x ({value:,.0f} vs {reference:,.0f} {unit}; needs {need:g}x)"
    if r < need:
        text += f"; short by {(need - r) / need:.0%} (needs {need * reference - value:,.0f} {unit} more)"
    if per_cpu[0] and per_cpu[1]:
        text += f"; per CPU-second {per_cpu[0] / per_cpu[1]:.2f}x"
    return Check(what, text, r >= need)


def at_most_check(what: str, value: float | None, reference: float | None) -> Check:
    if value is None or reference is None:
        return Check(what, "not measured (pending or failed)", None)
    text = f"{value:.2f} ms vs {reference:.2f} ms"
    if value > reference:
        text += f"; {value - reference:.2f} ms ({value / reference - 1:.0%}) too slow"
    return Check(what, text, value <= reference)


def field(row: Run | None, key: str) -> float | None:
    return None if row is None else row.get(key)


def targets(results: dict[str, Any]) -> list[Target]:
    runs, limits = results["runs"], results["model_limits"]
    fn = lambda s, fmt: next(iter(ok(runs, s, role="fnserve", format=fmt)), None)  # noqa: E731
    peer64 = best(ok(runs, "recs-c64", role="peer", batched=True))
    get64, limit64 = fn("recs-c64", "GET query"), next(iter(ok(runs, "recs-c64", role="limit")), None)
    peer1 = best(ok(runs, "recs-c1", role="peer"), "p50_ms", lowest=True)
    peer256 = best(ok(runs, "recs-b256", role="peer", batched=True))
    tagger = ok(runs, "tagger-b64", role="fnserve")
    encoded = best([r for r in tagger if r["format"] in ENCODED_TAGGER_FORMATS])
    pixels = best([r for r in tagger if r["format"] in PIXELS_TAGGER_FORMATS])
    tagger_limit = limits["tagger@64"]["predictions_per_s"]
    tagger_cpu_limit = limits["tagger@64"].get("predictions_per_cpu_s")
    name = lambda r: r["target"] if r else "no peer"  # noqa: E731
    return [
        Target(
            "1. recs, concurrency 64, one instance per GET",
            [
                ratio_check(
                    f"throughput >= 2x best peer ({name(peer64)})",
                    field(get64, "rps"),
                    field(peer64, "rps"),
                    2,
                    "req/s",
                    (field(get64, "pred_per_cpu_s"), field(peer64, "pred_per_cpu_s")),
                ),
                ratio_check(
                    "throughput >= 70% of the protocol limit",
                    field(get64, "rps"),
                    field(limit64, "rps"),
                    0.7,
                    "req/s",
                    (field(get64, "pred_per_cpu_s"), field(limit64, "pred_per_cpu_s")),
                ),
                at_most_check(
                    f"p99 <= best peer's ({name(peer64)})", field(get64, "p99_ms"), field(peer64, "p99_ms")
                ),
            ],
        ),
        Target(
            "2. recs, concurrency 1",
            [
                at_most_check(
                    f"p50 <= best peer's ({name(peer1)})",
                    field(fn("recs-c1", "GET query"), "p50_ms"),
                    field(peer1, "p50_ms"),
                )
            ],
        ),
        Target(
            "3. recs, 256 instances per request",
            [
                ratio_check(
                    "Arrow >= 50% of the model limit at batch 256",
                    field(fn("recs-b256", "Arrow"), "pred_per_s"),
                    limits["recs@256"]["predictions_per_s"],
                    0.5,
                    "pred/s",
                    (
                        field(fn("recs-b256", "Arrow"), "pred_per_cpu_s"),
                        limits["recs@256"].get("predictions_per_cpu_s"),
                    ),
                ),
                ratio_check(
                    f"JSON >= 1.5x best peer ({name(peer256)})",
                    field(fn("recs-b256", "JSON instances"), "pred_per_s"),
                    field(peer256, "pred_per_s"),
                    1.5,
                    "pred/s",
                    (
                        field(fn("recs-b256", "JSON instances"), "pred_per_cpu_s"),
                        field(peer256, "pred_per_cpu_s"),
                    ),
                ),
            ],
        ),
        Target(
            "4. tagger, 64 images per request in a binary form",
            [
                ratio_check(
                    f"JPEG bytes ({encoded['format'] if encoded else 'none served'}) "
                    ">= 80% of the model limit @64",
                    field(encoded, "pred_per_s"),
                    tagger_limit,
                    0.8,
                    "pred/s",
                    (field(encoded, "pred_per_cpu_s"), tagger_cpu_limit),
                ),
                ratio_check(
                    f"decoded pixels ({pixels['format'] if pixels else 'none served'}) "
                    ">= 80% of the model limit @64",
                    field(pixels, "pred_per_s"),
                    tagger_limit,
                    0.8,
                    "pred/s",
                    (field(pixels, "pred_per_cpu_s"), tagger_cpu_limit),
                ),
            ],
            any_of=True,
        ),
    ]


def verdict(target: Target) -> str:
    checks = target.checks
    if target.any_of:
        if any(c.passed for c in checks):
            return "PASS"
        return "PENDING" if all(c.passed is None for c in checks) else "FAIL"
    if any(c.passed is None for c in checks):
        return "PENDING" if not any(c.passed is False for c in checks) else "FAIL"
    return "PASS" if all(c.passed for c in checks) else "FAIL"


def targets_text(results: dict[str, Any]) -> str:
    lines = []
    for target in targets(results):
        lines.append(f"{verdict(target):<8} {target.title}{' (either form)' if target.any_of else ''}")
        for c in target.checks:
            mark = "pass" if c.passed else "FAIL" if c.passed is False else "----"
            lines.append(f"         {mark}  {c.what}: {c.measured}")
    return "\n".join(lines)


def scenario_table(results: dict[str, Any], key: str) -> list[str]:
    s = results["scenarios"][key]
    rows = [r for r in results["runs"] if r.get("scenario") == key]
    limit_key = f"{s['function']}@{s['instances'] if s['instances'] > 1 else 256}"
    model = results["model_limits"][limit_key]["predictions_per_s"]
    protocols = ok(results["runs"], key, role="limit")
    latency_bound = s["concurrency"] == 1  # compared by p50 with the best peer, batching on or off
    if latency_bound:
        peer = best(ok(results["runs"], key, role="peer"), "p50_ms", lowest=True)
    else:
        peer = best(ok(results["runs"], key, role="peer", batched=True))
    vs_peer_title = "p50 vs best peer's" if latency_bound else "predictions/s vs best peer (batching on)"
    out = [
        f"### {s['title']}",
        "",
        "| target | request format | req/s | predictions/s | p50 ms | p99 ms | errors "
        "| server CPU µs/req (core share) | predictions per server CPU-s "
        f"| % of model limit @{limit_key.split('@')[1]} | req/s vs protocol limit "
        f"| {vs_peer_title} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["status"] not in ("ok", "errors"):
            out.append(
                f"| {r['target']} | {r['format']} | {r['status']}: {r['detail'][:90]} | | | | | | | | |"
            )
            continue
        same = [p for p in protocols if p["format"] in (r["format"], f"{r['format']}, constant answer")]
        # single instances: everyone against fnserve's GET over the bare stack; batches: same body
        protocol = same[0] if same else (protocols[0] if protocols and s["instances"] == 1 else None)
        vs_protocol = f"{r['rps'] / protocol['rps']:.0%}" if protocol and r["role"] != "limit" else ""
        if not peer or r["role"] == "limit":
            vs_peer = ""
        elif latency_bound:
            vs_peer = f"{r['p50_ms'] / peer['p50_ms']:.2f}x"
        else:
            vs_peer = f"{r['pred_per_s'] / peer['pred_per_s']:.2f}x"
        of_model = f"{r['pred_per_s'] / model:.1%}" if r["role"] != "limit" else ""
        out.append(
            f"| {r['target']} | {r['format']} | {r['rps']:,.0f} | {r['pred_per_s']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
            f"| {r['cpu_us_per_request']:,.0f} ({r['server_cpu_share']:.0%}) "
            f"| {r.get('pred_per_cpu_s') or 0:,.0f} "
            f"| {of_model} | {vs_protocol} | {vs_peer} |"
        )
    return [*out, ""]


def render(results: dict[str, Any]) -> str:
    env = results["environment"]
    peers = "; ".join(
        f"{peer}: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        for peer, versions in env["peer_versions"].items()
    )
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `benchmarks/compare.py{' --quick' if results['quick'] else ''}` "
        f"on {results['started']}, in {results['duration_s'] // 60} min {results['duration_s'] % 60} s; "
        f"each number is the best of {results.get('windows', 1)} windows of {results['seconds']:g} s "
        f"after {results['warmup_s']:g} s of warm-up"
        + (
            f", in the best of {results['rounds']} rounds (every measurement repeated once per round, "
            "the rounds one after another: this machine's speed drifts over minutes)"
            if results.get("rounds", 1) > 1
            else ""
        )
        + " (other processes can only slow a server down). "
        "Servers pinned to core 0, wrk (1 thread) to core 1.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {env['cpu']}, {env['cores']} cores; {env['memory_gib']} GiB; "
        f"Linux {env['kernel']}; Python {env['python']}",
        f"- load average (1, 5, 15 min) before: {env['load_before']}, after: {env['load_after']}",
        f"- load generator: {env['wrk']}",
        "- checkpoints (every target serves these versions): "
        + ", ".join(f"{k} v{v}" for k, v in env.get("checkpoints", {}).items()),
        "- fnserve's venv: " + ", ".join(f"{k} {v}" for k, v in env["fnserve_versions"].items()),
        f"- peers' venvs: {peers}",
        "",
        "## Targets (issue 3)",
        "",
        "| target | verdict | measured |",
        "| --- | --- | --- |",
    ]
    for target in targets(results):
        measured = "<br>".join(
            f"{'pass' if c.passed else 'FAIL' if c.passed is False else 'pending'}: {c.what}: {c.measured}"
            for c in target.checks
        )
        either = " (either form)" if target.any_of else ""
        lines.append(f"| {target.title}{either} | **{verdict(target)}** | {measured} |")
    lines += [
        "",
        "## Model limit: the serving signature called in-process, pinned to core 0",
        "",
        "| model @ batch | calls/s | predictions/s | p50 ms per call | predictions per CPU-s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, v in results["model_limits"].items():
        lines.append(
            f"| {key} | {v['calls_per_s']:,.0f} | {v['predictions_per_s']:,.0f} | {v['p50_ms']:.3f} "
            f"| {v.get('predictions_per_cpu_s', 0):,.0f} |"
        )
    lines += ["", "## Results", ""]
    for key in results["scenarios"]:
        if any(r.get("scenario") == key for r in results["runs"]):
            lines += scenario_table(results, key)
    return "\n".join(lines)


def write(results: dict[str, Any], path: Path) -> Path:
    kept = ""
    if path.exists() and MARKER in (text := path.read_text()):
        kept = text.split(MARKER, 1)[1]
    path.write_text(render(results) + "\n" + MARKER + (kept or "\n"))
    return path
