"""Picking one of a version's replicas per request: least outstanding requests, ties taken in turn, and a
replica that failed to answer left out for a while (a passive health check, as nginx's `max_fails` does).

State is per gateway process and keyed by the replica's URL, so it survives the routing table's reloads.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

# How long a replica that did not answer is skipped; by then the supervisor has usually restarted it.
DOWN_FOR_S = 5.0


class ReplicaBalancer:
    def __init__(self, down_for_s: float = DOWN_FOR_S) -> None:
        self.down_for_s = down_for_s
        self._outstanding: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()

    def pick(self, urls: Sequence[str], exclude: str | None = None) -> str | None:
        """The replica with the fewest requests in flight, starting the search at the next one in turn (so
        equal loads rotate); replicas marked down only when every other is down too; None if there is no
        replica other than `exclude`."""
        count = len(urls)
        if count == 1:
            return urls[0] if urls[0] != exclude else None
        now = time.monotonic()
        start = next(self._turn)
        best, best_load, fallback = None, 0, None
        for offset in range(count):
            url = urls[(start + offset) % count]
            if url == exclude:
                continue
            down_until = self._down_until.get(url)
            if down_until is not None:
                if down_until > now:
                    fallback = fallback or url
                    continue
                del self._down_until[url]
            load = self._outstanding.get(url, 0)
            if best is None or load < best_load:
                best, best_load = url, load
                if load == 0:
                    break
        return best or fallback

    def started(self, url: str) -> None:
        self._outstanding[url] = self._outstanding.get(url, 0) + 1

    def finished(self, url: str) -> None:
        # Dropped at zero, so the replicas of retired servers (new ports after restarts) leave no entries.
        left = self._outstanding[url] - 1
        if left:
            self._outstanding[url] = left
        else:
            del self._outstanding[url]

    def mark_down(self, url: str) -> None:
        self._down_until[url] = time.monotonic() + self.down_for_s
