"""The driver's MLflow writer: one thread, calls in submission order, outages ridden out.

A tracking server can go away mid-sweep (restarted, a network cut, a full disk). Training must
go on, and nothing Tune recorded may be lost. So a call that fails is not simply dropped: the
writer asks the server whether it answers at all (one short ``/health`` request). If it does,
MLflow refused this one call, which is reported and skipped as before. If it does not, the
writer keeps the call, says so once, asks again every ``retry_every_s`` and sends the call,
and every call queued behind it in order, when the server is back.

A call that hangs (a server that accepts connections and never replies) is reported after
``stall_s`` by a watchdog thread, because the writer thread is stuck inside it.

At the end of the sweep :meth:`TrackingWriter.close` waits for the queue to drain; while the
server stays down it gives up after ``grace_s`` and returns how many calls were not sent.
Nothing is lost then either: Tune keeps every result, and ``ablate sweep --resume`` replays
them into MLflow (:meth:`orchestrator.callbacks.TrackingCallback.reconcile`).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from orchestrator import tracking
from orchestrator.commands.common import progress
from orchestrator.tracking_errors import is_transient, reason

Job = tuple[Callable[..., Any], tuple[Any, ...]]
TRANSIENT_RETRIES = 3  # sends again of a call that got no answer from a server that answers


class TrackingWriter:
    """Runs submitted MLflow calls in order on one background thread.

    Args:
        uri: the tracking URI the calls go to (probed when a call fails).
        stall_s: seconds one call may go unanswered before a warning (s).
        retry_every_s: seconds between probes of a server that does not answer (s).
        say: where the warnings and recovery lines go (a progress line on stderr).
    """

    def __init__(
        self,
        uri: str,
        stall_s: float = 30.0,
        retry_every_s: float = 10.0,
        say: Callable[[str], None] = progress,
    ) -> None:
        self.uri, self.stall_s, self.retry_every_s, self.say = uri, stall_s, retry_every_s, say
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.unsent = 0  # calls given up on at close while the server was down
        self.down_since: float | None = None  # monotonic time the outage was noticed
        self._busy_since: float | None = None  # monotonic start of the call in progress
        self._calls = 0  # calls attempted, so the watchdog warns once per stalled call
        self._abandon = threading.Event()  # close() stopped waiting for the server
        self._stopped = threading.Event()
        self._closed = 0  # 1 once close() queued its end marker
        self.thread = threading.Thread(target=self._loop, name="ablate-mlflow", daemon=True)
        self.watchdog = threading.Thread(target=self._watch, name="ablate-watch", daemon=True)
        self.thread.start()
        self.watchdog.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.jobs.put((fn, args))

    @property
    def waiting(self) -> int:
        """Calls submitted and not yet done (the one in progress included)."""
        return max(0, self.jobs.unfinished_tasks - self._closed)  # the end marker is no call

    def close(self, grace_s: float = 60.0, quiet_s: float = 5.0) -> int:
        """Send what is queued and stop; the number of calls not sent (0 normally).

        Waits as long as calls go through (a large artifact on a slow server is not cut off),
        saying so after ``quiet_s`` seconds; gives up once the server has not answered for
        ``grace_s`` seconds of this wait.
        """
        self._closed = 1
        self.jobs.put(None)
        started, told = time.monotonic(), set[str]()
        while self.thread.is_alive():
            self.thread.join(timeout=0.5)
            down = self.down_since
            if not self.thread.is_alive():
                break
            if down is None:
                if time.monotonic() - started > quiet_s:
                    self._say_once(told, f"sending the last {self.waiting} tracking calls")
                continue
            waits = f"({self.waiting} tracking calls not sent yet)"
            self._say_once(told, f"waiting up to {grace_s:g} s for it to answer {waits}")
            if time.monotonic() - max(down, started) > grace_s:
                self._abandon.set()
                self.thread.join(timeout=grace_s)  # at most one MLflow call's own retries
                break
        self._stopped.set()
        return self.unsent + self.waiting

    def _say_once(self, told: set[str], what: str) -> None:
        """``MLflow at URI: what``, once per kind of line (its first word)."""
        kind = what.split()[0]
        if kind not in told:
            told.add(kind)
            self.say(f"MLflow at {self.uri}: {what}")

    # ---------------------------------------------------------------- writer thread
    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                self._send(job)
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def _send(self, job: Job) -> None:
        """Run one call; through an outage, again until the server answers or close gives up.

        A call that failed without an answer (a dropped connection, a 5xx) while the server
        still answers its probe (it was shutting down, or is overloaded) is sent again up to
        ``TRANSIENT_RETRIES`` times; an answer that refuses the call (a 4xx) is reported once.
        """
        fn, args = job
        transient = 0
        while not self._abandon.is_set():
            self._calls += 1
            self._busy_since = time.monotonic()
            try:
                fn(*args)
                return
            except Exception as err:  # tracking must never stop the sweep
                if not tracking.answers(self.uri):
                    if not self._wait_for_server(err):
                        break
                    continue
                transient += 1
                if not is_transient(err) or transient > TRANSIENT_RETRIES:
                    name = getattr(fn, "__name__", "call")
                    self.say(f"warning: MLflow {name} failed: {type(err).__name__}: {err}")
                    traceback.print_exc()
                    return
                self._abandon.wait(self.retry_every_s)
            finally:
                self._busy_since = None
        self.unsent += 1

    def _wait_for_server(self, err: Exception) -> bool:
        """Block until the server answers (True) or close() gives up on it (False)."""
        self.down_since = time.monotonic()
        why = reason(err)
        self.say(
            f"warning: MLflow at {self.uri} does not answer ({why}); training goes on, "
            f"and the {self.waiting} tracking calls waiting are sent when it answers "
            f"(checked every {self.retry_every_s:g} s)"
        )
        while not self._abandon.wait(self.retry_every_s):
            if tracking.answers(self.uri):
                gone = time.monotonic() - self.down_since
                self.say(
                    f"MLflow at {self.uri} answers again after {gone:.0f} s; sending the "
                    f"{self.waiting} tracking calls that waited"
                )
                self.down_since = None
                return True
        return False

    # -------------------------------------------------------------------- watchdog
    def _watch(self) -> None:
        """Warn once per call that has gone unanswered for ``stall_s`` (outside an outage,
        which has its own lines)."""
        warned = 0
        while not self._stopped.wait(min(1.0, self.stall_s / 4)):
            call = self._calls  # before the start time: a newer call only looks younger
            since = self._busy_since
            if since is None or call == warned or self.down_since is not None:
                continue
            if time.monotonic() - since > self.stall_s:
                warned = call
                self.say(
                    f"warning: MLflow at {self.uri} has not answered for {self.stall_s:g} s "
                    f"({self.waiting} tracking calls waiting); training goes on and the calls "
                    "are sent when it answers"
                )
