"""The sweep's console: the live rich panel on a terminal, the plain lines elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.live import LiveCallback, SweepProgress, clock, console_callback, render
from orchestrator.trial_events import ProgressCallback


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_stderr_is_not_a_terminal() -> None:
    assert type(console_callback(8, "val/dice_mean", "max", io.StringIO())) is ProgressCallback
    assert isinstance(console_callback(8, "val/dice_mean", "max", Tty()), LiveCallback)


def test_counts_best_and_time_left_from_finished_trials() -> None:
    state = SweepProgress(total=6, metric="val/dice_mean", started=0.0)
    state.start("a/seed0", now=0.0)
    state.start("b/seed0", now=0.0)
    state.end("a/seed0", True, 0.71, now=60.0)
    state.end("b/seed0", False, None, now=30.0)
    state.start("c/seed0", now=60.0)
    assert (state.done, state.failed, len(state.running), state.pending) == (1, 1, 1, 3)
    assert state.best == (0.71, "a/seed0")
    # mean ended duration 45 s; c has 45-10 = 35 s left; 3 pending x 45 s; one at a time
    assert state.eta_s(now=70.0) == 35.0 + 3 * 45.0
    assert clock(170.0) == "2m50s" and clock(float("nan")) == "?" and clock(3725) == "1h02m"


def test_rich_panel_renders_the_numbers() -> None:
    state = SweepProgress(total=4, metric="val/dice_mean", started=0.0)
    state.start("a/seed0", now=0.0)
    state.end("a/seed0", True, 0.8123, now=20.0)
    state.start("b/seed0", now=20.0)
    console = Console(record=True, force_terminal=True, width=140)
    console.print(render(state, now=30.0))
    text = console.export_text()
    assert "1/4 trials" in text
    for header in ("done", "running", "pending", "failed", "best val/dice_mean", "time left"):
        assert header in text
    assert "0.8123 (a/seed0)" in text and "30s" in text  # elapsed
    assert "50s" in text  # time left: b has 10 s to go, then 2 pending x 20 s, one at a time
