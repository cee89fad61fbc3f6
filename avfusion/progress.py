"""Progress lines (local timestamp, rate, ETA) and an append-only CSV log that survives restarts.

    progress = Progress(total=len(loader), desc="pretrain ep 3", every=20)
    for batch in loader:
        ...
        progress.update(loss=loss.item())
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def timestamp(when: float | None = None) -> str:
    """`YYYY-MM-DD HH:MM:SS` in local time: the prefix of every progress line."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


class Progress:
    """Prints `YYYY-MM-DD HH:MM:SS desc done/total (pct) rate it/s ETA ... key=value` every `every`
    steps and at the end."""

    def __init__(self, total: int, desc: str = "", every: int = 10, stream=None, start: int = 0):
        self.total, self.desc, self.every = total, desc, max(1, every)
        self.done = start
        self.stream = stream or sys.stdout
        self.t0 = time.perf_counter()
        self.start = start

    def update(self, n: int = 1, **metrics) -> None:
        self.done += n
        if self.done % self.every == 0 or self.done >= self.total:
            elapsed = time.perf_counter() - self.t0
            rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            pct = 100.0 * self.done / self.total if self.total else 100.0
            fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in metrics.items())
            print(f"{timestamp()} {self.desc} {self.done}/{self.total} ({pct:.0f}%) {rate:.2f} it/s "
                  f"ETA {format_seconds(eta)} {fields}".rstrip(), file=self.stream, flush=True)


class CSVLog:
    """Append rows to a CSV file; the header is written once. Rows are flushed at once."""

    def __init__(self, path: str | Path, fieldnames: list[str]):
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", newline="")
        # "\n" like atomic_write_csv (used on resume), so a resumed log has one line ending
        self._writer = csv.DictWriter(self._fh, fieldnames=self.fieldnames, extrasaction="raise",
                                      lineterminator="\n")
        if new:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, **row) -> None:
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def truncate_after(path: str | Path, column: str, last_value: float) -> None:
        """Drop rows whose `column` exceeds `last_value` (used on resume so no step is logged twice)."""
        path = Path(path)
        if not path.exists():
            return
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
            fieldnames = rows[0].keys() if rows else None
        if fieldnames is None:
            return
        from .io import atomic_write_csv

        kept = [r for r in rows if float(r[column]) <= last_value]
        atomic_write_csv(path, kept, list(fieldnames))
