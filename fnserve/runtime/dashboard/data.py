"""What ``GET /dashboard/data`` answers on `fn serve`: every function, its versions and recent figures.

    {"source": "fn serve", "bucket_s": 10, "now": 1700000000.0,
     "functions": [{"name": "double", "versions": [{"version": "3", "serving": true, "weight": null,
                    "ready": 1, "desired": null, "points": [...], "last_minute": {...}}]}]}

The gateway answers the same shape (:mod:`fnserve.gateway.dashboard`), with weights and replicas.
"""

from __future__ import annotations

import time
from typing import Any

from fnserve.runtime.dashboard.series import BUCKET_S, by_version, version_label
from fnserve.runtime.service import Runtime


def runtime_data(runtime: Runtime, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    functions = []
    for name, fn in sorted(runtime.functions.items()):
        serving = version_label(fn.loaded.version) if fn.loaded is not None else None
        # Versions with figures of the last minutes too: the one swapped out still shows its traffic.
        labels = runtime.recent.versions(name) | ({serving} if serving else set())
        versions = [
            {
                "version": label,
                "serving": label == serving,
                "weight": None,
                "ready": int(label == serving),
                "desired": None,
                **runtime.recent.figures(name, label, now),
            }
            for label in sorted(labels, key=by_version)
        ]
        functions.append({"name": name, "versions": versions})
    return {"source": "fn serve", "bucket_s": BUCKET_S, "now": now, "functions": functions}
