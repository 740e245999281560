"""Slowing down guessers: after `limit` failed authentications from one source within
`window_s`, that source gets 429 until the window has passed (REG-16). Pure: the caller
passes the time."""

from collections import deque
from dataclasses import dataclass, field


@dataclass
class FailureThrottle:
    limit: int = 20
    window_s: float = 60.0
    max_sources: int = 10_000  # bounded memory when addresses are spoofed or many
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def failed(self, source: str, now: float) -> None:
        if source not in self._failures and len(self._failures) >= self.max_sources:
            self._forget_quiet(now)
        self._failures.setdefault(source, deque()).append(now)

    def retry_after(self, source: str, now: float) -> float | None:
        """Seconds until `source` may try again, or None when it may now."""
        recent = self._failures.get(source)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if not recent:
            del self._failures[source]
            return None
        if len(recent) < self.limit:
            return None
        return recent[0] + self.window_s - now

    def _forget_quiet(self, now: float) -> None:
        for source in list(self._failures):
            self.retry_after(source, now)  # drops sources whose failures are all old
        if len(self._failures) >= self.max_sources:  # still full: forget the oldest
            oldest = min(self._failures, key=lambda s: self._failures[s][-1])
            del self._failures[oldest]
