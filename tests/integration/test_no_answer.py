"""A server that accepts requests and never answers: said within the hint interval, not after an hour."""

from __future__ import annotations

import socket
import threading

import pytest

from raybench.errors import BackendError
from raybench.loadgen.client import ClientConfig
from raybench.warmup import warm_up
from raybench.workloads import RandomWorkload


@pytest.fixture
def silent_server():
    """Accepts connections, reads the request, never writes a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://user:s3cret@127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_warm_up_without_an_answer_is_reported_then_fails_in_one_line(silent_server):
    lines: list[str] = []
    client = ClientConfig(base_url=silent_server, model="m", request_timeout_s=1.2)
    workload = RandomWorkload(num_prompts=2, input_len=8, output_len=4)
    with pytest.raises(BackendError) as info:
        warm_up(client, workload, 1, report=lines.append, no_answer_hint_s=0.5)
    port = silent_server.rsplit(":", 1)[1]
    # a line every 0.5 s until the 1.2 s request timeout (a busy machine may add one before it fires)
    assert lines[:2] == [f"  warm-up: no answer from http://<redacted>@127.0.0.1:{port}/v1/completions for {t} s: "
                         "see --stall-timeout, --request-timeout" for t in ("0.5", "1")]
    assert len(lines) <= 4
    assert str(info.value).startswith(f"warm-up request to http://<redacted>@127.0.0.1:{port}/v1/completions failed")
    assert "s3cret" not in str(info.value)
