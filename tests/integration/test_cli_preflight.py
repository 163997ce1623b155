"""A server that cannot be benchmarked stops `raybench bench` with one line, before any load."""

import http.server
import threading

import pytest
from click.testing import CliRunner

from raybench.backends.process import ServerProcess, free_port
from raybench.cli import main
from raybench.experiment import SimBackend

MODEL = "deepseek-ai/DeepSeek-R1"


def bench(*args, tmp_path):
    result = CliRunner().invoke(main, ["bench", *args, "--num-prompts", "4", "--out", str(tmp_path)])
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def sim_server(tmp_path):
    def start(*extra):
        port = free_port()
        argv = SimBackend(timing="zero", extra_args=tuple(extra)).argv(model=MODEL, port=port)
        process = ServerProcess(name="sim", argv=argv, base_url=f"http://127.0.0.1:{port}", model=MODEL,
                                log_path=tmp_path / "sim.log", ready_timeout_s=60)
        process.start()
        started.append(process)
        return process.base_url

    started = []
    yield start
    for p in started:
        p.stop()


@pytest.fixture
def html_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>It works!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unreachable_url(tmp_path):
    port = free_port()
    result = bench("--url", f"http://127.0.0.1:{port}", tmp_path=tmp_path)
    assert result.exit_code == 1
    assert f"Error: cannot reach http://127.0.0.1:{port}:" in result.output
    assert "is the server running? (check --url)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_server_that_is_not_openai_compatible(tmp_path, html_server):
    result = bench("--url", html_server, tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "answered text/html, not JSON" in result.output
    assert "does not look like an OpenAI-compatible server" in result.output


def test_unknown_model_lists_the_served_ones(tmp_path, sim_server):
    url = sim_server()
    result = bench("--url", url, "--model", "deepseek-ai/DeepSeek-R2", tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "unknown model 'deepseek-ai/DeepSeek-R2'; available: deepseek-ai/DeepSeek-R1. Did you mean 'deepseek-ai/DeepSeek-R1'?" in result.output


def test_server_that_fails_every_request_stops_at_the_warm_up(ray_local, tmp_path, sim_server):
    url = sim_server("--fault", "http_500")
    result = bench("--url", url, tmp_path=tmp_path)
    assert result.exit_code == 1
    assert f"Error: warm-up request to {url}/v1/completions failed: HTTP 500:" in result.output


def test_bench_against_a_running_server_uses_its_only_model(ray_local, tmp_path, sim_server):
    url = sim_server()
    result = bench("--url", url, "--input-len", "16", "--output-len", "4", "--concurrency", "2", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert "Successful requests:                     4" in result.output


@pytest.mark.parametrize("secret_url", ["http://user:s3cret-pw@127.0.0.1:{port}", "http://s3cret-pw@127.0.0.1:{port}",
                                        "http://127.0.0.1:{port}/?api_key=s3cret-pw"])
def test_a_password_in_the_url_is_never_echoed(tmp_path, secret_url):
    port = free_port()
    result = bench("--url", secret_url.format(port=port), tmp_path=tmp_path)
    assert result.exit_code == 1
    assert "s3cret-pw" not in result.output and "<redacted>" in result.output, result.output
    assert result.output.startswith("Error: cannot reach http://")
    assert len(result.output.strip().splitlines()) == 1


def test_a_failed_warm_up_stops_its_scraper_and_load_generators_so_the_cell_can_run_again_in_the_same_session(
        ray_local, tmp_path, sim_server):
    import dataclasses

    import ray

    from raybench.errors import BackendError
    from raybench.experiment import Experiment, ExternalBackend, Online
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    failing = Experiment(name="again", model=MODEL, backends=(ExternalBackend(name="ext", url=sim_server("--fault", "http_500")),),
                         online=(Online(concurrency=(1,), input_len=8, output_len=4, num_prompts=2),),
                         token_id_range=(1000, 2000))
    cell_id = failing.cells()[0].id
    rd = RunDir.create(tmp_path, "again")
    # the error (and so its traceback, which holds the runner's frames) stays alive, as it does in a
    # driver that reports it and goes on: nothing of the failed cell may outlive it but its summary
    with pytest.raises(BackendError) as failed:
        Runner(failing, rd, RunOptions(), report=lambda line: None).run()
    assert "warm-up request" in str(failed.value)
    # both were started before the warm-up, to start while it runs
    alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert not {f"raybench:{cell_id}:server-metrics", f"raybench:{cell_id}:0"} & alive, alive
    healthy = dataclasses.replace(failing, backends=(ExternalBackend(name="ext", url=sim_server()),))
    summaries = Runner(healthy, rd, RunOptions(), report=lambda line: None).run()
    assert [(s["cell_id"], s["outcome"]) for s in summaries] == [(cell_id, "complete")]
