"""Benchmarks start servers, workers and databases and stop them in `finally` blocks, but Python's
default SIGTERM ends the process without running those blocks (`timeout`, a cancelled job), which would
leave everything they started running. `run` turns SIGTERM into SystemExit first, so the blocks run."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType


def _exit(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def run(main: Callable[[], object]) -> None:
    signal.signal(signal.SIGTERM, _exit)
    main()
