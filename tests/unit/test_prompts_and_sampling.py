"""Tokenizer choice per backend, the out-of-vocabulary hint, sampling flags and fields (no Ray, no sockets)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from raybench.analysis.table import format_summary_table
from raybench.cli import main
from raybench.errors import ConfigError
from raybench.experiment import Experiment, ExternalBackend, Online, Sampling, SimBackend, VLLMBackend
from raybench.loadgen.client import ClientConfig, request_body, sent_parameters
from raybench.prompting import PromptSources, oov_hint
from raybench.workloads import RandomWorkload, RequestSpec
from raybench.workloads.tokenizer import WORD_TOKENIZER, load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from tiny_tokenizer import make_tokenizer  # noqa: E402

SWEEP = (Online(concurrency=(1,), input_len=16, output_len=2, num_prompts=2),)
OOV = "error event in stream: {'message': 'Token id 99723 is out of vocabulary', 'type': 'BadRequestError'}"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok"), kind="bpe")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def experiment(**fields) -> Experiment:
    backends = fields.pop("backends", (ExternalBackend(name="server", url="http://127.0.0.1:9"),))
    return Experiment(name="t", model=fields.pop("model", "no-such-org/no-such-model"), backends=backends,
                      online=SWEEP, **fields)


def resolve(exp: Experiment, *, chat: bool = False):
    lines: list[str] = []
    sources = PromptSources(exp, report=lines.append)
    return [sources.for_backend(b, chat=chat, text=False) for b in exp.backends], lines


def test_the_model_tokenizer_that_does_not_load_falls_back_once_and_says_so() -> None:
    exp = experiment(backends=(ExternalBackend(name="a", url="http://127.0.0.1:9"),
                               ExternalBackend(name="b", url="http://127.0.0.1:9")))
    (a, b), lines = resolve(exp)
    assert a.tokenizer is None and (a.token_id_low, a.token_id_high) == (1000, 100_000)
    assert a.record["fallback"] == "token_id_range" and a.record["tried"] == "no-such-org/no-such-model"
    assert "not in the local Hugging Face cache" in a.record["why"]
    assert b.record == a.record
    assert len(lines) == 1 and "--tokenizer" in lines[0] and "--token-id-range" in lines[0]


def test_the_model_tokenizer_is_used_where_it_loads(tok_dir: Path) -> None:
    (source,), lines = resolve(experiment(model=str(tok_dir)))
    assert source.tokenizer == str(tok_dir.resolve()) and lines == []
    assert source.record["tokenizer"]["vocab_size"] == load_tokenizer(str(tok_dir)).vocab_size


def test_a_named_tokenizer_that_does_not_load_is_an_error() -> None:
    with pytest.raises(ConfigError, match="tokenizer 'no-such-org/tok' could not be loaded"):
        resolve(experiment(tokenizer="no-such-org/tok"))


def test_the_simulator_counts_words_without_a_model() -> None:
    (source,), lines = resolve(experiment(backends=(SimBackend(),)), chat=True)
    assert source.tokenizer == WORD_TOKENIZER and source.text and lines == []


def test_a_token_id_range_is_used_as_given() -> None:
    (source,), lines = resolve(experiment(token_id_range=(5, 500)))
    assert (source.tokenizer, source.token_id_low, source.token_id_high) == (None, 5, 500) and lines == []


@pytest.mark.parametrize("fields", [{}, {"token_id_range": (5, 500)}])
def test_chat_on_a_real_server_needs_a_real_tokenizer(fields: dict) -> None:
    with pytest.raises(ConfigError, match="chat prompts need the model's tokenizer") as err:
        resolve(experiment(**fields), chat=True)
    assert "--tokenizer" in str(err.value) and "\n" not in str(err.value)


def test_chat_with_a_tokenizer_sends_its_text(tok_dir: Path) -> None:
    (source,), _ = resolve(experiment(tokenizer=str(tok_dir)), chat=True)
    workload = RandomWorkload(num_prompts=2, input_len=30, output_len=2, **source.workload_params())
    spec = workload.build([0])[0]
    body = orjson.loads(request_body(ClientConfig(base_url="http://x", model="m", endpoint="/v1/chat/completions"), spec))
    assert body["messages"][0]["content"] == spec.prompt_text and " w" not in spec.prompt_text
    record = source.cell_record(workload, chat=True)
    tok = load_tokenizer(str(tok_dir))
    assert record["chat_template_overhead_tokens"] == tok.count_chat(body["messages"]) - 30 > 0


def test_the_oov_hint_names_the_range_and_both_flags() -> None:
    workload = RandomWorkload(num_prompts=1, input_len=4, output_len=1)
    hint = oov_hint(OOV, workload)
    assert "1000..99999" in hint and "--tokenizer" in hint and "--token-id-range" in hint
    assert oov_hint("HTTP 500: boom", workload) == ""
    assert "tokenizer /x" in oov_hint(OOV, RandomWorkload(num_prompts=1, input_len=4, output_len=1, tokenizer="/x"))


def test_text_prompts_go_out_as_text_and_ids_as_ids() -> None:
    client = ClientConfig(base_url="http://x", model="m")
    ids = RequestSpec(request_id=0, prompt_token_ids=RandomWorkload(num_prompts=1, input_len=3, output_len=1)
                      .build([0])[0].prompt_token_ids, prompt_tokens=3, max_tokens=1)
    assert isinstance(orjson.loads(request_body(client, ids))["prompt"], list)
    text = RequestSpec(request_id=0, prompt_token_ids=ids.prompt_token_ids, prompt_tokens=3, max_tokens=1,
                       prompt_text="a b c")
    assert orjson.loads(request_body(client, text))["prompt"] == "a b c"


def test_sampling_reaches_every_body_and_the_record() -> None:
    settings = Sampling(temperature=0.7, top_p=0.9, top_k=40, extra_body={"seed": 1, "temperature": 0.5}).client_settings()
    client = ClientConfig(base_url="http://x", model="m", **settings)
    sent = sent_parameters(client)
    # extra_body is merged last: what was sent is its temperature
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["seed"]) == (0.5, 0.9, 40, 1)
    assert sent["ignore_eos"] is True and sent["min_tokens"] == "max_tokens"
    default = sent_parameters(ClientConfig(base_url="http://x", model="m"))
    assert default["temperature"] == 0.0 and "top_p" not in default and "top_k" not in default


@pytest.mark.parametrize(("field", "value"), [("top_p", 0.0), ("top_p", 1.01), ("top_k", 0), ("top_k", -5)])
def test_client_config_refuses_impossible_sampling(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"{field}={value!r} is not allowed"):
        ClientConfig(base_url="http://x", model="m", **{field: value})


def test_the_table_says_what_was_sent_and_how_prompts_were_made() -> None:
    summary = {"compat_mode": "raybench", "request_rate": "inf", "max_concurrency": 1, "completed": 1, "failed": 0,
               "duration_s": 1.0, "total_input_tokens": 1, "total_output_tokens": 1, "output_tokens_fallback_requests": 0,
               "sampling": {"temperature": 0.0, "top_p": 0.9, "stream": True, "seed": 3},
               "prompts": {"tokenizer": None, "token_id_range": [1000, 100000]}, "hint": "the server rejected prompt ids"}
    table = format_summary_table({**summary, **dict.fromkeys(_RATE_KEYS)})
    assert "Sampling sent:                           temperature=0.0 top_p=0.9 extra=seed=3" in table
    assert "token ids 1000..99999, no tokenizer" in table
    assert "Hint: the server rejected prompt ids" in table


_RATE_KEYS = ("request_throughput_per_s", "input_throughput_tokens_per_s", "output_throughput_tokens_per_s",
              "steady_state_output_throughput_tokens_per_s", "peak_output_tokens_per_s", "peak_concurrency_requests",
              "total_throughput_tokens_per_s", "mean_concurrency_requests")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sampling": Sampling()}, None),
        ({"token_id_range": (500, 5)}, "token_id_range=(500, 5) is not allowed"),
        ({"token_id_range": (5, 500), "tokenizer": "x"}, "give tokenizer or token_id_range, not both"),
        ({"tokenizer": ""}, "tokenizer='' is not allowed"),
        ({"sampling": {"temperature": 1}}, "sampling={'temperature': 1} is not allowed"),
    ],
)
def test_experiment_prompt_and_sampling_fields(fields: dict, message: str | None) -> None:
    if message is None:
        assert experiment(**fields).sampling.temperature == 0.0
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        experiment(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": -0.1}, "temperature=-0.1 is not allowed"),
        ({"top_p": 0.0}, "top_p=0.0 is not allowed"),
        ({"top_p": 1.5}, "top_p=1.5 is not allowed"),
        ({"top_k": 0}, "top_k=0 is not allowed"),
        ({"top_k": True}, "top_k=True is not allowed"),
        ({"extra_body": ["seed"]}, "extra_body=['seed'] is not allowed: a JSON object"),
        ({"extra_body": {"f": {1, 2}}}, "JSON values only"),
    ],
)
def test_sampling_fields_are_validated(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Sampling(**fields)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-id-range", "5-500"], "expected LOW:HIGH"),
        (["--token-id-range", "500:5"], "need 0 <= LOW < HIGH"),
        (["--token-id-range", "a:b"], "expected LOW:HIGH"),
        (["--extra-body", "{seed: 1}"], "Invalid value for --extra-body: '{seed: 1}' is not JSON"),
        (["--extra-body", "[1, 2]"], "expected a JSON object"),
        (["--top-p", "0"], "Invalid value for '--top-p'"),
        (["--top-k", "-2"], "Invalid value for '--top-k'"),
        (["--temperature", "-1"], "Invalid value for '--temperature'"),
        (["--tokenizer", "x", "--token-id-range", "1:5"], "give --tokenizer or --token-id-range, not both"),
    ],
)
def test_bench_flags_are_validated_in_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_named_tokenizer_that_does_not_load_stops_bench_before_ray(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--tokenizer", str(tmp_path / "none"),
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: tokenizer {str(tmp_path / 'none')!r}: no such file or directory"
    assert not (tmp_path / "runs").exists()


def test_a_dialect_without_id_prompts_gets_text(tok_dir: Path) -> None:
    from raybench.backends.base import Dialect

    backend = VLLMBackend(name="v", dialect=Dialect(token_id_prompts=False))
    sources = PromptSources(experiment(backends=(backend,), tokenizer=str(tok_dir)), report=lambda _: None)
    assert sources.for_backend(backend, chat=False, text=not backend.dialect.token_id_prompts).text


def test_a_dialect_without_id_prompts_cannot_fall_back_to_ids() -> None:
    from raybench.backends.base import Dialect

    backend = VLLMBackend(name="v", dialect=Dialect(token_id_prompts=False))
    sources = PromptSources(experiment(backends=(backend,)), report=lambda _: None)
    with pytest.raises(ConfigError, match="v: text prompts \\(v's dialect takes no token ids\\) need the model's tokenizer"):
        sources.for_backend(backend, chat=False, text=True)
