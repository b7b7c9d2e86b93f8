"""The measured cost of a model call: ``seconds ≈ fixed + per_instance × batch size``.

Fitted by exponentially weighted least squares over recent calls, so it follows a model
whose cost drifts (warm-up, a new version, a busy machine) without storing samples.

    >>> cost = CostModel()
    >>> for n, s in [(1, 0.0011), (64, 0.0043), (1, 0.0010), (64, 0.0042)]:
    ...     cost.observe(n, s)
    >>> round(cost.predict(32) * 1000, 1)
    2.6
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CostModel:
    decay: float = 0.95  # weight of the past per new observation: ~20 calls of memory
    _w: float = 0.0
    _x: float = 0.0
    _y: float = 0.0
    _xx: float = 0.0
    _xy: float = 0.0
    calls: int = 0

    @property
    def known(self) -> bool:
        return self.calls >= 3

    def observe(self, n: int, seconds: float) -> None:
        d = self.decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + n
        self._y = self._y * d + seconds
        self._xx = self._xx * d + n * n
        self._xy = self._xy * d + n * seconds
        self.calls += 1

    def coefficients(self) -> tuple[float, float]:
        """``(fixed_s, per_instance_s)``, both non-negative."""
        if self._w == 0:
            return 0.0, 0.0
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x <= 1e-9 * max(1.0, mean_x * mean_x):  # one batch size seen: split evenly is all we know
            return mean_y / 2, mean_y / 2 / max(mean_x, 1.0)
        slope = (self._xy / self._w - mean_x * mean_y) / var_x
        slope = max(slope, 0.0)
        fixed = max(mean_y - slope * mean_x, 0.0)
        return fixed, slope

    def predict(self, n: int) -> float:
        fixed, per_instance = self.coefficients()
        return fixed + per_instance * n

    def largest_within(self, budget_s: float) -> int:
        """Largest batch whose predicted call time fits ``budget_s`` (0 when nothing fits)."""
        fixed, per_instance = self.coefficients()
        if budget_s <= fixed:
            return 0
        if per_instance <= 0:
            return 2**31
        return int((budget_s - fixed) / per_instance)
