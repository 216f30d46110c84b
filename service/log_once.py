"""A failure that repeats is logged once when it starts, then as a count, not once per occurrence."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatingLog:
    def __init__(self, logger: logging.Logger, every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.every = every
        self.clock = clock
        self._since: dict[str, tuple[float, int]] = {}  # key -> (last logged, occurrences not logged)

    def failed(self, key: str, message: str, *args: object) -> None:
        now = self.clock()
        last = self._since.get(key)
        if last is None:
            self.logger.error(message, *args)
            self._since[key] = (now, 0)
        elif now - last[0] >= self.every:
            self.logger.error(message + " (%d more since the last report)", *args, last[1] + 1)
            self._since[key] = (now, 0)
        else:
            self._since[key] = (last[0], last[1] + 1)

    def recovered(self, key: str, message: str, *args: object) -> None:
        last = self._since.pop(key, None)
        if last is not None:
            self.logger.warning(message + " (%d failures not reported)", *args, last[1])
