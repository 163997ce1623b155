"""A server that rejects stream_options (pydantic's extra="forbid", as strict OpenAI-compatible
servers answer): the warm-up names --no-usage, and with it the requests go through, their output
counted one token per streamed event."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from raybench.errors import BackendError
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.warmup import warm_up
from raybench.workloads import RandomWorkload

EVENTS = 3


class _StrictHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "stream_options" in body:
            error = json.dumps({"object": "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', "
                                "'stream_options'), 'msg': 'Extra inputs are not permitted'}]", "code": 400}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        events = [{"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": f" t{i}", "finish_reason":
                   "length" if i == EVENTS - 1 else None}]} for i in range(EVENTS)]
        stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(stream)))
        self.end_headers()
        self.wfile.write(stream)

    def log_message(self, *args):
        pass


@pytest.fixture
def strict_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StrictHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_server_rejecting_stream_options_is_served_with_no_usage(strict_server):
    workload = RandomWorkload(num_prompts=4, input_len=8, output_len=EVENTS)
    with pytest.raises(BackendError, match=r"the server may not accept stream_options: try --no-usage"):
        # --no-continuous-usage, which this hint named, still sent stream_options
        warm_up(ClientConfig(base_url=strict_server, model="m", continuous_usage_stats=False), workload, 1)
    client = ClientConfig(base_url=strict_server, model="m", include_usage=False)
    warm_up(client, workload, 1)
    generator = LoadGenerator(cell_id="c", client=client, specs=workload.build(range(4)), arrivals_s=np.zeros(4),
                              concurrency=2)
    asyncio.run(generator.run(0))
    chunks, requests = generator.drain()
    assert list(requests.status) == [0, 0, 0, 0]
    assert list(requests.output_tokens) == [None] * 4  # no usage came: the events are the count
    assert sum(code >> 2 for code in chunks.code) == 4 * EVENTS  # pack_code: tokens << 2 | kind
