"""A progress bar on stderr: tqdm when it is installed, one rewritten line otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts finished requests (and errors) of one load point; `total` None for open-ended."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.done = self.errors = 0
        self._last_draw = 0.0
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=label, unit="req", file=sys.stderr, leave=True)

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.errors += not ok
        if self._bar is not None:
            self._bar.update()
            if not ok:
                self._bar.set_postfix(errors=self.errors)
        elif time.monotonic() - self._last_draw > 0.5:
            self._draw()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._draw()
            print(file=sys.stderr)

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        of_total = f"/{self.total}" if self.total else ""
        line = f"\r{self.label}: {self.done}{of_total} requests, {self.errors} errors"
        print(line, end="", file=sys.stderr, flush=True)
