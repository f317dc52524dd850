"""The step search of the capacity scenario: which publish rate to try next.

Pure logic, no I/O, so the rules are easy to read and to test:

1. climb: start at `start`, double after every passing step (capped at `max_rate`);
2. if the very first step fails, halve instead until a step passes (or `floor` is reached);
3. once there is a passing rate below a failing one, bisect between them `refine` times.

The answer is the highest passing rate. With `refine = 0` this is exactly "step the rate up,
stop at the first failing step, report the last passing one"; each refinement step halves the
uncertainty (after doubling, 4 steps leave it at 1/16 of the last passing rate, ~6 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateSearch:
    start: float
    max_rate: float
    refine: int
    floor: float
    passed: float | None = None  # highest rate that passed
    failed: float | None = None  # lowest rate that failed
    history: list[tuple[float, bool]] = field(default_factory=list)
    _refined: int = 0

    def next_rate(self) -> float | None:
        """The next rate to try, or None when the search is over."""
        if self.failed is None:  # climbing
            if self.passed is None:
                return min(self.start, self.max_rate)
            if self.passed >= self.max_rate:
                return None  # capped: capacity is at least max_rate
            return _round(min(self.passed * 2, self.max_rate))
        if self.passed is None:  # everything so far failed: go down
            lower = _round(self.failed / 2)
            return lower if lower >= self.floor else None
        if self._refined >= self.refine:
            return None
        middle = _round((self.passed + self.failed) / 2)
        if middle in (self.passed, self.failed):
            return None  # the bracket is as narrow as the rounding allows
        return middle

    def record(self, rate: float, ok: bool) -> None:
        if self.passed is not None and self.failed is not None:
            self._refined += 1
        self.history.append((rate, ok))
        if ok:
            self.passed = rate if self.passed is None else max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)

    @property
    def capped(self) -> bool:
        """True when even `max_rate` passed: the capacity found is a lower bound."""
        return self.passed is not None and self.passed >= self.max_rate


def _round(rate: float) -> float:
    """Rates to 0.1 msg/s: finer steps are below the measurement's noise."""
    return max(0.1, round(rate, 1))
