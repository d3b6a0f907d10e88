"""The driver's MLflow writer against a real HTTP server on loopback that goes away and back.

The jobs are real HTTP requests to that server (what an MLflow call is, minus MLflow), so an
outage is a refused connection, not a simulated exception; the writer probes ``/health``.
"""

from __future__ import annotations

import time
import urllib.request

from loopback_http import Server

from orchestrator import tracking
from orchestrator.tracking_writer import TRANSIENT_RETRIES, TrackingWriter


def get(uri: str, path: str) -> None:
    """One tracking call: a GET that raises when the server is down or refuses it."""
    urllib.request.urlopen(f"{uri}{path}", timeout=2).close()


def writer_for(uri: str, lines: list[str], **kwargs: float) -> TrackingWriter:
    kwargs.setdefault("retry_every_s", 0.1)
    return TrackingWriter(uri, say=lines.append, **kwargs)


def test_calls_run_in_order_and_close_reports_none_unsent(server: Server) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines)
    for i in range(5):
        writer.submit(get, server.uri, f"/call/{i}")
    assert writer.close() == 0
    assert server.paths == [f"/call/{i}" for i in range(5)]
    assert lines == []


def test_a_refused_call_is_reported_once_and_the_others_still_go(server: Server) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines)
    writer.submit(get, server.uri, "/call/0")
    writer.submit(get, server.uri, "/refuse/1")  # the server answers 404: not an outage
    writer.submit(get, server.uri, "/call/2")
    assert writer.close() == 0
    assert server.paths == ["/call/0", "/refuse/1", "/call/2"]  # not retried
    assert lines == ["warning: MLflow get failed: HTTPError: HTTP Error 404: Not Found"]


def test_calls_wait_out_an_outage_and_are_sent_in_order_when_it_ends(server: Server) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines)
    server.stop()
    for i in range(3):
        writer.submit(get, server.uri, f"/call/{i}")
    deadline = time.monotonic() + 10
    while writer.down_since is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.down_since is not None, lines
    time.sleep(0.5)  # the calls keep waiting
    server.start()
    assert writer.close() == 0
    assert server.paths == ["/call/0", "/call/1", "/call/2"]
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        f"warning: MLflow at {server.uri} does not answer (Connection refused); training goes on"
    )
    assert "training goes on, and the 3 tracking calls waiting are sent when it answers" in lines[0]
    assert lines[1].startswith(f"MLflow at {server.uri} answers again after ")
    assert lines[1].endswith("; sending the 3 tracking calls that waited")


def test_close_gives_up_on_a_server_that_stays_down_and_counts_the_unsent(
    server: Server,
) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines)
    server.stop()
    for i in range(4):
        writer.submit(get, server.uri, f"/call/{i}")
    started = time.monotonic()
    assert writer.close(grace_s=0.5) == 4
    assert time.monotonic() - started < 10
    assert not writer.thread.is_alive()
    assert (
        f"MLflow at {server.uri}: waiting up to 0.5 s for it to answer (4 tracking calls not "
        "sent yet)"
    ) in lines


def test_a_call_without_an_answer_is_sent_again_while_the_server_answers(server: Server) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines)
    writer.submit(get, server.uri, "/flaky/0")  # 503 once (a server shutting down), then 200
    writer.submit(get, server.uri, "/busy/1")  # 503 every time: given up after 3 more tries
    writer.submit(get, server.uri, "/call/2")
    assert writer.close() == 0
    assert server.paths == ["/flaky/0"] * 2 + ["/busy/1"] * (1 + TRANSIENT_RETRIES) + ["/call/2"]
    assert lines == ["warning: MLflow get failed: HTTPError: HTTP Error 503: Service Unavailable"]


def test_a_call_that_hangs_is_reported_once_while_it_hangs(server: Server) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines, stall_s=0.2)
    writer.submit(time.sleep, 1.0)
    writer.submit(get, server.uri, "/call/1")
    assert writer.close() == 0
    assert lines == [
        f"warning: MLflow at {server.uri} has not answered for 0.2 s (2 tracking calls "
        "waiting); training goes on and the calls are sent when it answers"
    ]
    assert server.paths == ["/call/1"]


def test_close_says_what_it_waits_for_when_the_last_calls_take_a_while(server: Server) -> None:
    lines: list[str] = []
    writer = writer_for(server.uri, lines)
    writer.submit(time.sleep, 1.5)  # a large checkpoint upload, say
    writer.submit(get, server.uri, "/call/1")
    assert writer.close(quiet_s=0.2) == 0
    assert lines == [f"MLflow at {server.uri}: sending the last 2 tracking calls"]
    assert server.paths == ["/call/1"]


def test_answers_tells_a_listening_server_from_a_closed_port(server: Server) -> None:
    assert tracking.answers(server.uri)
    server.stop()
    assert not tracking.answers(server.uri, timeout_s=1.0)
    assert tracking.answers("sqlite:///nowhere/mlflow.db")  # a local store: nothing to probe
