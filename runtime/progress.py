"""Progress display for the command line (used by the CLI only; library functions report
progress through callbacks such as ``run_sweep(on_row=...)`` and log, never print).

A tqdm bar on a terminal; plain lines (no carriage returns) when the stream is redirected, so
logs stay readable. tqdm is small, pure Python and widely used."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "sweep", "run")``: call :meth:`update` once per finished unit and
    :meth:`close` at the end (or use it as a context manager). ``enabled=False`` shows
    nothing; ``every`` thins the plain lines (a line every ``every`` units, and the last)."""

    def __init__(self, total: int, desc: str, unit: str, *, enabled: bool = True,
                 stream: TextIO | None = None, every: int = 1) -> None:
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done, self.t0, self.every = 0, time.perf_counter(), max(1, int(every))
        self.enabled = enabled
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream)

    def update(self, n: int = 1, **postfix: object) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
            return
        if self.done % self.every and self.done < self.total:
            return
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        self.stream.write(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {el:.1f} s "
                          f"elapsed, eta {eta:.1f} s{extra}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
