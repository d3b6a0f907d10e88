"""The sweep's console: a live table on a terminal, plain progress lines elsewhere.

On a terminal (stderr is a TTY) :class:`LiveCallback` draws, with ``rich``, one panel that
updates in place: trials done / running / pending / failed, the best value so far (and its
trial), elapsed time and the time left, estimated from the finished trials' durations and how
many run at once. Where stderr is not a terminal (CI logs, ``ray job submit``) the sweep keeps
:class:`~orchestrator.callbacks.ProgressCallback`'s one line per event.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from orchestrator.trial_events import ProgressCallback, finished_outcome, trial_label


@dataclass
class SweepProgress:
    """Counts and timings of a sweep, updated from Tune's trial events (no Tune import)."""

    total: int
    metric: str
    mode: str = "max"
    started: float = field(default_factory=time.monotonic)
    running: dict[str, float] = field(default_factory=dict)  # trial key -> start time
    durations: list[float] = field(default_factory=list)  # seconds of each ended trial
    failed: int = 0
    done: int = 0
    best: tuple[float, str] | None = None  # (value, trial key)

    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.failed - len(self.running), 0)

    def start(self, key: str, now: float | None = None) -> None:
        self.running[key] = time.monotonic() if now is None else now

    def end(self, key: str, ok: bool, value: float | None, now: float | None = None) -> None:
        began = self.running.pop(key, None)
        now = time.monotonic() if now is None else now
        if began is not None:
            self.durations.append(now - began)
        self.done, self.failed = self.done + ok, self.failed + (not ok)
        if value is not None and math.isfinite(value) and self._better(value):
            self.best = (value, key)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best[0] if self.mode == "max" else value < self.best[0]

    def eta_s(self, now: float | None = None) -> float:
        """Seconds left: the trials not ended, at the mean ended-trial duration, over the
        number running at once (NaN before the first trial ends)."""
        if not self.durations:
            return math.nan
        now = time.monotonic() if now is None else now
        mean = sum(self.durations) / len(self.durations)
        width = max(len(self.running), 1)
        left_running = sum(max(mean - (now - t), 0.0) for t in self.running.values())
        return (left_running + self.pending * mean) / width

    def elapsed_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started


def clock(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` for NaN."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render(state: SweepProgress, now: float | None = None) -> Any:
    """A rich renderable: a progress bar line and the counts/best/time table."""
    from rich.table import Table

    ended = state.done + state.failed
    width = 30
    filled = int(width * ended / state.total) if state.total else width
    bar = "█" * filled + "░" * (width - filled)
    table = Table(title=f"sweep  {bar}  {ended}/{state.total} trials", title_justify="left")
    for column in ("done", "running", "pending", "failed", f"best {state.metric}", "elapsed"):
        table.add_column(column)
    table.add_column("time left")
    best = f"{state.best[0]:.4f} ({state.best[1]})" if state.best else "-"
    table.add_row(
        str(state.done),
        str(len(state.running)),
        str(state.pending),
        f"[red]{state.failed}[/red]" if state.failed else "0",
        best,
        clock(state.elapsed_s(now)),
        clock(state.eta_s(now)),
    )
    return table


class LiveCallback(tune.Callback):
    """The live panel of :func:`render`, redrawn on each trial event and a few times a second."""

    def __init__(self, total: int, metric: str, mode: str = "max", console: Any = None) -> None:
        self.total, self.metric, self.mode = total, metric, mode
        self.console = console
        self.state: SweepProgress | None = None
        self.live: Any = None
        self.planned: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:  # pickled into the experiment: settings only
        return {"total": self.total, "metric": self.metric, "mode": self.mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["total"], state["metric"], state["mode"])  # type: ignore[misc]

    def setup(self, **info: Any) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = SweepProgress(self.total, self.metric, self.mode)
        console = self.console or Console(stderr=True)
        self.live = Live(render(self.state), console=console, refresh_per_second=2)
        self.live.start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key, epochs = trial_label(trial)
        self.planned[key] = int(epochs or 0)
        self._state().start(key)
        self._draw()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = trial_label(trial)[0]
        last = trial.last_result or {}
        outcome = last.get("outcome") or finished_outcome(last, self.planned.get(key, 0))
        ok = outcome in ("finished", "stopped_early")
        value = last.get(f"best/{self.metric}")
        self._state().end(key, ok, float(value) if isinstance(value, int | float) else None)
        self._draw()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._state().end(trial_label(trial)[0], False, None)
        self._draw()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self._draw()
            self.live.stop()
            self.live = None

    def _state(self) -> SweepProgress:
        if self.state is None:
            self.setup()
        assert self.state is not None
        return self.state

    def _draw(self) -> None:
        if self.live is not None and self.state is not None:
            self.live.update(render(self.state), refresh=True)


def console_callback(total: int, metric: str, mode: str, stream: Any = None) -> tune.Callback:
    """The live panel when ``stream`` (stderr) is a terminal, else the plain progress lines."""
    stream = sys.stderr if stream is None else stream
    if hasattr(stream, "isatty") and stream.isatty():
        return LiveCallback(total, metric, mode)
    return ProgressCallback(metric, mode)
