"""raybench's command line: parse, build the config, call the library, translate errors.

Ray is imported only after ``cluster.connect`` has decided between a real cluster and a
private loopback-only one, because Ray reads that choice when it is imported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import sys
import threading
from pathlib import Path

import click

from raybench import __version__
from raybench.errors import ConfigError, RaybenchError, StorageError
from raybench.redaction import RedactingFilter, redact_text
from raybench.sim.command import sim_command

_GOODPUT_KEYS = ("ttft", "tpot", "e2el")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so a run stops the way Ctrl-C stops it."""


def _raise_terminated() -> None:
    raise _Terminated()


class _SigtermHandler:
    """SIGTERM stops a run like Ctrl-C, and is remembered: the exit code and the line say which came.

    The type of the interrupt cannot say it: while the driver waits in ``ray.get`` (most of a
    cell), Ray runs the handler from its own signal check, catches the interrupt as a
    KeyboardInterrupt and raises a plain one in its place.
    """

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum, frame) -> None:
        self.received = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _raise_terminated()
        # raised in whatever task step the signal lands in, the interrupt would also be stored on that
        # task, which asyncio then reports with a traceback as never retrieved: raise it between
        # callbacks instead, where it ends the loop as asyncio's own Ctrl-C handling does
        loop.call_soon_threadsafe(_raise_terminated)


def handle_sigterm(handler: object = None) -> _SigtermHandler | None:
    """Make SIGTERM stop a run like Ctrl-C: cells in flight are cancelled, completed ones kept, one line.

    ``handler``: the one installed before (``signal.getsignal``), installed again if it is ours,
    so that what it remembers is kept; else a new one. Called again once Ray is up: its core
    worker installs a native handler for SIGTERM that prints a stack dump; the last
    ``signal.signal`` wins. Signals go to the main thread only: elsewhere nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    ours = handler if isinstance(handler, _SigtermHandler) else _SigtermHandler()
    signal.signal(signal.SIGTERM, ours)
    return ours


class _RedactingEcho(logging.Handler):
    """raybench's log records on stderr (the current one: tests swap it), secrets redacted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(RedactingFilter())
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _route_logs() -> None:
    logger = logging.getLogger("raybench")
    if not any(isinstance(h, _RedactingEcho) for h in logger.handlers):
        logger.addHandler(_RedactingEcho())
        logger.propagate = False


class _Group(click.Group):
    """Turns raybench's errors into one-line messages and exit codes (the only place that does).

    Exit codes: 1 an error (one line), 2 bad usage, 130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM.
    """

    def invoke(self, ctx: click.Context):
        sigterm = handle_sigterm()  # a new one each time: an earlier invocation's SIGTERM is not this one's
        _route_logs()
        try:
            return super().invoke(ctx)
        except RaybenchError as err:
            raise click.ClickException(redact_text(str(err))) from None
        except KeyboardInterrupt as err:
            terminated = isinstance(err, _Terminated) or (sigterm is not None and sigterm.received)
            signame = "SIGTERM" if terminated else "Ctrl-C"
            if ctx.invoked_subcommand == "run":  # the one command that writes cells as it goes and resumes
                click.echo(f"interrupted: completed cells are kept in the run directory; "
                           f"run again with --resume for the rest ({signame})", err=True)
            else:
                click.echo(f"interrupted ({signame})", err=True)
            sys.exit(143 if terminated else 130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="raybench")
def main() -> None:
    """Benchmark LLM inference servers (vLLM, SGLang, TensorRT-LLM, any OpenAI-compatible API)
    from a pool of load-generator actors on Ray.

    \b
    Quick start (local Ray + the built-in simulator, no GPU):
      raybench run experiments/quickstart.py
      raybench bench --backend sim --input-len 3200 --output-len 800 --num-prompts 500 --concurrency 128
    """


def _is_slo_word(word: str) -> bool:
    """Whether a word reads as SLOs (``tpot:100``, ``ttft:1,tpot:2``): the test for a word after --goodput's value."""
    pieces = re.split(r"[\s,]+", word.strip())
    for piece in pieces:
        key, sep, value = piece.partition(":")
        if not (sep and re.fullmatch(r"[A-Za-z]\w*", key)):
            return False
        try:
            float(value)
        except ValueError:
            return False
    return bool(word.strip())


class _SloWordsOption(click.Option):
    """A repeatable option that also takes the words after its value while they read as ``name:number``.

    vLLM's ``--goodput ttft:2000 tpot:100`` is one option with several words; a click option takes
    one, and the second word would be an unexpected extra argument. The test on each word keeps a
    positional argument that follows (an experiment file) out of the option. ``--goodput ttft:1
    --goodput tpot:2`` and ``--goodput "ttft:1 tpot:2"`` work as before.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "multiple": True})

    def add_to_parser(self, parser, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        # click's parser has no hook for an option of several words: wrap the parser's record of
        # this option (the same object for each of its spellings), which stores each value taken
        mine = {o for o in (*parser._long_opt.values(), *parser._short_opt.values()) if o.obj is self}
        for parsed in mine:
            store = parsed.process

            def process(value, state, store=store) -> None:
                store(value, state)
                while state.rargs and _is_slo_word(state.rargs[0]):
                    store(state.rargs.pop(0), state)

            parsed.process = process


def _parse_goodput(values: tuple[str, ...]) -> dict[str, float]:
    slos: dict[str, float] = {}
    for item in " ".join(values).replace(",", " ").split():
        key, sep, value = item.partition(":")
        if not sep or key not in _GOODPUT_KEYS:
            raise click.BadParameter(f"{item!r}: expected KEY:MS with KEY one of {', '.join(_GOODPUT_KEYS)}, e.g. ttft:500", param_hint="--goodput")
        try:
            slos[key] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number of milliseconds", param_hint="--goodput") from None
        # inf (or nan) would pass here and fail only once the cell ran, and every resume again
        if not (math.isfinite(slos[key]) and slos[key] > 0):
            raise click.BadParameter(f"{item!r}: the SLO must be a finite number of milliseconds > 0, e.g. {key}:500",
                                     param_hint="--goodput")
    return slos


def _parse_token_id_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    low, sep, high = value.partition(":")
    try:
        if not sep:
            raise ValueError
        bounds = int(low), int(high)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected LOW:HIGH, two integers (ids from LOW to HIGH - 1), e.g. 1000:32000",
                                 param_hint="--token-id-range") from None
    if not 0 <= bounds[0] < bounds[1] <= 2**31:
        raise click.BadParameter(f"{value!r}: need 0 <= LOW < HIGH <= 2147483648", param_hint="--token-id-range")
    return bounds


def _parse_extra_body(value: str | None) -> dict:
    if value is None:
        return {}
    import orjson

    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise click.BadParameter(f"{value!r} is not JSON ({err})", param_hint="--extra-body") from None
    if not isinstance(body, dict):
        raise click.BadParameter(f"{value!r}: expected a JSON object, e.g. '{{\"repetition_penalty\": 1.1}}'",
                                 param_hint="--extra-body")
    return body


@main.command(context_settings={"show_default": True})
@click.option("--url", help="Base URL of a running OpenAI-compatible server, e.g. http://127.0.0.1:8000.")
@click.option("--backend", type=click.Choice(["sim"]), help="Start a server instead of --url: the built-in simulator.")
@click.option("--endpoint", default="/v1/completions", help="API path: /v1/completions or /v1/chat/completions.")
@click.option("--model", default=None, help="Model name to request. Default: the only model the server lists (the simulator serves deepseek-ai/DeepSeek-R1).")
@click.option("--dataset", type=click.Choice(["random", "prefix", "sharegpt", "custom", "trace", "multiturn"]), default="random", help="random: random token ids of exact length; prefix: shared-prefix groups; sharegpt: ShareGPT JSON; custom: JSONL of prompt or messages; trace: replay a Mooncake trace at its timestamps; multiturn: sessions of --num-turns turns (see docs/workloads.md).")
@click.option("--dataset-path", type=click.Path(path_type=Path), default=None, help="sharegpt, custom, trace: the file.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, help="trace: the trace's gaps times this (2 = half its pace, 0.5 = twice).")
@click.option("--num-sessions", type=click.IntRange(min=1), default=16, help="multiturn: conversations in the cell (--concurrency counts sessions).")
@click.option("--num-turns", type=click.IntRange(min=1), default=4, help="multiturn: turns per session.")
@click.option("--think-time", type=click.FloatRange(min=0), default=0.0, help="multiturn: seconds between an answer's end and the next turn.")
@click.option("--input-len", type=click.IntRange(min=1), default=1024, help="Prompt tokens (prefix: prefix + question).")
@click.option("--output-len", type=click.IntRange(min=1), default=None, help="Output tokens, forced with ignore_eos and min_tokens. Default: 128; sharegpt: each reply's length; custom: each record's output_tokens (else 128); trace: each line's output_length. Given, it replaces the file's lengths for sharegpt, custom and trace.")
@click.option("--range-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.0, help="Lengths drawn from [L(1-r), L(1+r)] (vLLM's meaning); 0 = exact.")
@click.option("--num-prompts", type=click.IntRange(min=1), default=None, help="Requests in the cell. Default: 100; sharegpt, custom: 1000 (fewer where fewer records pass); trace: every record (else the first N). Not for prefix (--prefix-groups x --prompts-per-group) or multiturn (--num-sessions).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Cap on requests in flight (the client's semaphore). Default: no cap.")
@click.option("--request-rate", type=click.FloatRange(min=0, min_open=True), default=math.inf, help="Requests per second (gamma arrivals); inf releases all at once.")
@click.option("--burstiness", type=click.FloatRange(min=0, min_open=True), default=1.0, help="Gamma shape of the arrivals: 1 = Poisson, < 1 burstier.")
@click.option("--prefix-groups", type=click.IntRange(min=1), default=10, help="prefix dataset: number of shared prefixes.")
@click.option("--prompts-per-group", type=click.IntRange(min=1), default=50, help="prefix dataset: prompts per prefix.")
@click.option("--prefix-len", type=click.IntRange(min=1), default=2000, help="prefix dataset: shared prefix tokens.")
@click.option("--goodput", cls=_SloWordsOption, metavar="KEY:MS...", help="SLOs as vLLM takes them: ttft:MS tpot:MS e2el:MS (one --goodput, several words; or --goodput per SLO).")
@click.option("--ramp-up-strategy", "ramp_up", type=click.Choice(["linear", "exponential"]), default=None, help="Ramp the load up (vLLM's flag): with --request-rate the rate goes from --ramp-up-start to it over the cell's requests; without, the concurrency cap goes from --ramp-up-start to --concurrency over --ramp-up-duration seconds.")
@click.option("--ramp-up-start", type=click.FloatRange(min=0, min_open=True), default=None, help="--ramp-up-strategy: the starting request rate (or concurrency).")
@click.option("--ramp-up-duration", type=click.FloatRange(min=0, min_open=True), default=None, help="--ramp-up-strategy without --request-rate: seconds the concurrency ramp takes.")
@click.option("--search", "search_over", type=click.Choice(["concurrency", "request_rate"]), default=None, help="Find the highest concurrency or request rate of --search-grid whose requests meet the --goodput SLOs (bisection: about log2 of the grid's cells).")
@click.option("--search-grid", default=None, help="--search: the ascending values to choose from, e.g. 1,2,4,8,16,32.")
@click.option("--search-attainment", type=click.FloatRange(0, 1, min_open=True), default=0.99, help="--search: the share of requests that must meet every SLO (0.99: the p99).")
@click.option("--seed", type=int, default=0, help="Seed for prompts and arrivals.")
@click.option("--warmup-requests", type=click.IntRange(min=0), default=1, help="Requests sent before the cell and not measured (its first prompts, at most 16 output tokens each; no more than the cell has): a server that rejects raybench's requests stops the cell with one line. 0 sends none, as vllm bench serve without --num-warmups; the server's own metrics then count only the cell.")
@click.option("--compat", type=click.Choice(["raybench", "sglang", "vllm"]), default="raybench", help="Whose metric definitions the summary uses.")
@click.option("--actors", type=click.IntRange(min=1), default=None, help="Load-generator actors. Default: one per 256 streams.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), help="Root of run directories.")
@click.option("--report/--no-report", "write_report", default=True, help="Write report.html and charts/ into the run directory at the end.")
@click.option("--address", default=None, help="Ray cluster to join (or RAY_ADDRESS). Default: a private local cluster on 127.0.0.1.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=3600.0, help="Seconds before a request is recorded as timed out.")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds without a byte before a request is recorded as timed out. Default: none (a request queued at the server may wait long for its first byte).")
@click.option("--ignore-eos/--no-ignore-eos", default=True, help="Send ignore_eos (vLLM, SGLang and the simulator accept it).")
@click.option("--min-tokens/--no-min-tokens", default=True, help="Send min_tokens = max_tokens.")
@click.option("--usage/--no-usage", default=True, help="Send stream_options.include_usage (the server's token counts); --no-usage sends no stream_options, for servers that reject it: output tokens are then counted one per streamed event.")
@click.option("--continuous-usage/--no-continuous-usage", default=True, help="Ask for usage on every chunk (exact tokens per chunk).")
@click.option("--keepalive/--no-keepalive", default=True, help="Reuse connections; --no-keepalive opens one per request (servers that close kept-alive connections, e.g. llama.cpp's llama-server).")
@click.option("--tokenizer", default=None, help="Tokenizer whose vocabulary random prompts draw from: a local directory with tokenizer.json, or a Hugging Face model name. Default: the model's own where it loads (else token ids from --token-id-range's default, said in the output); the simulator's word count with --backend sim.")
@click.option("--tokenizer-revision", default=None, help="Branch, tag or commit of a Hugging Face --tokenizer (or of the model's own).")
@click.option("--token-id-range", default=None, metavar="LOW:HIGH", help="Without a tokenizer: random prompt ids from LOW to HIGH - 1 (keep inside the model's vocabulary). Default when no tokenizer loads: 1000:100000.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, help="Sampling temperature every request sends (0 = greedy, as the seed benchmark).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="top_p every request sends. Default: not sent (the server's default).")
@click.option("--top-k", type=click.IntRange(min=-1), default=None, help="top_k every request sends (-1 = all tokens). Default: not sent.")
@click.option("--extra-body", default=None, metavar="JSON", help='A JSON object merged into every request body last, e.g. \'{"repetition_penalty": 1.1}\'.')
@click.option("--sim-timing", type=click.Choice(["engine", "fixed", "zero"]), default="engine", help="--backend sim: engine (continuous batching), fixed (--sim-ttft-ms/--sim-itl-ms), zero (as fast as it can).")
@click.option("--sim-ttft-ms", type=click.FloatRange(min=0), default=200.0, help="--sim-timing fixed: time to first token.")
@click.option("--sim-itl-ms", type=click.FloatRange(min=0), default=20.0, help="--sim-timing fixed: time between chunks.")
@click.option("--sim-tokens-per-chunk", type=click.IntRange(min=1), default=1, help="--backend sim: tokens per streamed chunk (as MTP produces).")
@click.option("--sim-gpu", default="H200", help="--backend sim: GPU profile (H200, MI300X, H100).")
@click.option("--no-answer-hint-s", type=click.FloatRange(min=0, min_open=True), default=60.0, help="Seconds without a byte on a request in flight before the progress line names --stall-timeout and --request-timeout.")
def bench(**opts) -> None:
    """Benchmark one cell: a server at --url, or the simulator (--backend sim).

    \b
    Examples:
      raybench bench --backend sim --input-len 3200 --output-len 800 --num-prompts 500 --concurrency 128
      raybench bench --backend sim --num-prompts 1024 --concurrency 1024 --actors 4
      raybench bench --url http://127.0.0.1:8000 --model deepseek-ai/DeepSeek-R1 \\
          --input-len 3200 --output-len 800 --num-prompts 500 --concurrency 64 --goodput ttft:2000 tpot:100
      raybench bench --url http://127.0.0.1:8000 --request-rate 4 --burstiness 0.5 --num-prompts 200
    """
    from raybench.experiment import Experiment, ExternalBackend, Online, Sampling, SimBackend
    from raybench.plan import check_simulators

    _check_number_flags(click.get_current_context())
    if (opts["url"] is None) == (opts["backend"] is None):
        raise click.UsageError("give exactly one of --url (a running server) or --backend sim")
    if opts["dataset"] == "prefix" and opts["prefix_len"] >= opts["input_len"]:
        raise click.BadParameter(f"{opts['prefix_len']} must be below --input-len ({opts['input_len']})", param_hint="--prefix-len")
    if not math.isfinite(opts["burstiness"]):  # inf would fail only once the cell ran, and on every resume
        raise click.BadParameter(f"{opts['burstiness']}: the gamma shape must be finite (1 = Poisson, < 1 burstier)",
                                 param_hint="--burstiness")
    _check_ramp_flags(opts)
    goodput = _parse_goodput(opts["goodput"])
    token_id_range = _parse_token_id_range(opts["token_id_range"])
    if token_id_range is not None and opts["tokenizer"] is not None:
        raise click.UsageError("give --tokenizer or --token-id-range, not both (with a tokenizer, ids come from its vocabulary)")
    sampling = Sampling(temperature=opts["temperature"], top_p=opts["top_p"], top_k=opts["top_k"],
                        extra_body=_parse_extra_body(opts["extra_body"]))
    if opts["backend"] == "sim":
        backend = SimBackend(timing=opts["sim_timing"], gpu=opts["sim_gpu"], ttft_ms=opts["sim_ttft_ms"],
                             itl_ms=opts["sim_itl_ms"], tokens_per_chunk=opts["sim_tokens_per_chunk"])
        model = opts["model"] or "deepseek-ai/DeepSeek-R1"
    else:
        from raybench.loadgen.preflight import check_server

        backend = ExternalBackend(name="server", url=opts["url"])
        model = check_server(opts["url"], opts["model"])
    num_prompts, requests = _bench_sizes(opts)
    search, concurrency = _bench_search(opts, goodput, default_concurrency=requests)
    sweep = Online(
        concurrency=concurrency, input_len=opts["input_len"], output_len=opts["output_len"] or 128,
        num_prompts=num_prompts, dataset=opts["dataset"], range_ratio=opts["range_ratio"],
        request_rate=opts["request_rate"], burstiness=opts["burstiness"], num_groups=opts["prefix_groups"],
        prompts_per_group=opts["prompts_per_group"], prefix_len=opts["prefix_len"],
        dataset_path=None if opts["dataset_path"] is None else str(opts["dataset_path"]), time_scale=opts["time_scale"],
        force_output_len=opts["dataset"] in ("sharegpt", "custom", "trace") and opts["output_len"] is not None,
        num_turns=opts["num_turns"], think_time_s=opts["think_time"],
        ramp_up=opts["ramp_up"], ramp_start=opts["ramp_up_start"], ramp_up_s=opts["ramp_up_duration"] or 0.0,
    )
    experiment = Experiment(name="bench", model=model, backends=(backend,), online=(sweep,), seed=opts["seed"],
                            compat=opts["compat"], goodput_slos_ms=goodput, tokenizer=opts["tokenizer"],
                            tokenizer_revision=opts["tokenizer_revision"], token_id_range=token_id_range, sampling=sampling,
                            search=search, warmup_requests=opts["warmup_requests"])
    check_simulators(experiment)
    client_overrides = {"ignore_eos": opts["ignore_eos"], "send_min_tokens": opts["min_tokens"],
                        "stall_timeout_s": opts["stall_timeout"],
                        "include_usage": opts["usage"], "continuous_usage_stats": opts["continuous_usage"],
                        "endpoint": opts["endpoint"],
                        "keepalive": opts["keepalive"]}
    _run(experiment, out=opts["out"], address=opts["address"], actors=opts["actors"],
         request_timeout_s=opts["request_timeout"], client_overrides=client_overrides,
         no_answer_hint_s=opts["no_answer_hint_s"], write_report=opts["write_report"],
         options={k: (str(v) if isinstance(v, Path) or v == math.inf else v) for k, v in opts.items()})


def _check_number_flags(ctx: click.Context) -> None:
    """A NaN in a number flag is refused here: click's FloatRange lets it through (every comparison with NaN
    is false), and a NaN timeout or rate would pass on into the run as no value any flag means.

    An infinite --request-timeout is refused too: aiohttp rounds the deadline up to an integer, so every
    request would fail with an OverflowError, recorded as a failed row, instead of never timing out.
    """
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(value, float) and math.isnan(value):
            raise click.BadParameter("nan is not a number: give one (--help shows the range allowed)", ctx=ctx, param=param)
        if param.name == "request_timeout" and isinstance(value, float) and math.isinf(value):
            raise click.BadParameter(f"{value}: give a finite number of seconds; for no practical limit a large one, "
                                     "e.g. 86400", ctx=ctx, param=param)


def _check_ramp_flags(opts: dict) -> None:
    """The ramp's flags go together; named as flags here (the sweep would name its fields, ramp_start...)."""
    given = [flag for flag, key in (("--ramp-up-start", "ramp_up_start"), ("--ramp-up-duration", "ramp_up_duration"))
             if opts[key] is not None]
    if opts["ramp_up"] is None:
        if given:  # a duration alone was silently ignored: no ramp ran
            raise click.UsageError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --ramp-up-strategy "
                                   "linear|exponential; give it too, or leave them out")
        return
    if opts["ramp_up_start"] is None:
        raise click.UsageError("--ramp-up-strategy needs --ramp-up-start: the request rate (with --request-rate) "
                               "or the concurrency the ramp starts from, e.g. --ramp-up-start 1")
    if math.isinf(opts["request_rate"]) and opts["ramp_up_duration"] is None:
        raise click.UsageError("--ramp-up-strategy without --request-rate ramps the concurrency cap: give "
                               "--ramp-up-duration, the seconds it takes, e.g. --ramp-up-duration 60")
    start, cap = opts["ramp_up_start"], opts["concurrency"]
    if not math.isfinite(start):  # int(inf) below would raise from deep inside instead of naming the flag
        raise click.BadParameter(f"{start}: the ramp starts from a finite rate or concurrency, e.g. 1",
                                 param_hint="--ramp-up-start")
    if math.isinf(opts["request_rate"]) and (start != int(start) or (cap is not None and start > cap)):
        most = "" if cap is None else f" up to --concurrency ({cap})"
        raise click.UsageError(f"--ramp-up-start {start:g}: without --request-rate it is the concurrency the cap "
                               f"starts from, a whole number{most}")
    if not math.isinf(opts["request_rate"]) and opts["ramp_up_duration"] is not None:
        # a rate ramp spans the cell's requests (vLLM's meaning): a duration would be ignored
        raise click.UsageError("--ramp-up-duration times a concurrency ramp; with --request-rate the rate ramps "
                               "over the cell's requests: leave --ramp-up-duration out")


def _bench_search(opts: dict, goodput: dict[str, float], *, default_concurrency: int):
    """The SloSearch of --search (or None) and the sweep's concurrency values."""
    from raybench.search import SloSearch

    given = opts["concurrency"] or default_concurrency
    if opts["search_over"] is None:
        if opts["search_grid"] is not None:
            raise click.UsageError("--search-grid goes with --search concurrency|request_rate")
        return None, (given,)
    if not goodput:
        raise click.UsageError("--search needs the SLOs to meet, e.g. --goodput ttft:500 tpot:50")
    try:
        grid = [float(v) for v in (opts["search_grid"] or "").replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"{opts['search_grid']!r}: expected numbers such as 1,2,4,8", param_hint="--search-grid") from None
    if not grid:
        raise click.UsageError("--search needs --search-grid, e.g. 1,2,4,8,16")
    if opts["search_over"] == "concurrency":
        if any(v != int(v) or v < 1 for v in grid) or grid != sorted(set(grid)):
            raise click.BadParameter("concurrency values must be ascending integers >= 1", param_hint="--search-grid")
        return SloSearch(over="concurrency", attainment=opts["search_attainment"]), tuple(int(v) for v in grid)
    return SloSearch(over="request_rate", grid=tuple(grid), attainment=opts["search_attainment"]), (given,)


def _bench_sizes(opts: dict) -> tuple[int, int]:
    """The sweep's num_prompts and the requests (or sessions) the default concurrency covers.

    A trace is read here, so a bad file stops the command with its first bad line before
    anything starts.
    """
    dataset, given = opts["dataset"], opts["num_prompts"]
    if (dataset in ("sharegpt", "custom", "trace")) != (opts["dataset_path"] is not None):
        raise click.UsageError("--dataset-path goes with --dataset sharegpt, custom or trace (and they need it)")
    if dataset in ("sharegpt", "custom"):
        return given or 1000, given or 1000  # vLLM's default; fewer when fewer records pass
    if given is not None and dataset in ("prefix", "multiturn"):  # it was ignored without a word
        sizes = "--prefix-groups and --prompts-per-group" if dataset == "prefix" else "--num-sessions"
        raise click.UsageError(f"--num-prompts does not size --dataset {dataset}: give {sizes} instead")
    if dataset == "prefix":
        n = opts["prefix_groups"] * opts["prompts_per_group"]
        return n, n
    if dataset == "multiturn":
        return opts["num_sessions"], opts["num_sessions"]
    if dataset == "trace":
        from raybench.workloads.trace import read_mooncake

        n = len(read_mooncake(opts["dataset_path"], given))
        return n, n
    return given or 100, given or 100


_SIM_TIMING_HELP = ("With --simulate: engine (continuous batching in real time: as long as the real run), "
                    "zero (as fast as the client reads: checks the whole plan in minutes). Default: engine.")


@main.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True, help="Root of run directories.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write into this run directory; cells already complete there are skipped.")
@click.option("--resume", is_flag=True, help="Continue the newest run of this experiment under --out (or --run-dir): only unfinished cells run.")
@click.option("--address", default=None, help="Ray cluster to join (or RAY_ADDRESS). Default: a private local cluster on 127.0.0.1.")
@click.option("--actors", type=click.IntRange(min=1), default=None, help="Load-generator actors per cell. Default: one per 256 streams.")
@click.option("--report/--no-report", "write_report", default=True, show_default=True, help="Write report.html and charts/ into the run directory at the end.")
@click.option("--only", default=None, help="Run only the cells whose plan fields match, e.g. backend=vllm,hardware=H200,mode=online,concurrency=4|32 (see `raybench plan`).")
@click.option("--num-prompts", type=click.IntRange(min=1), default=None, help="Requests per online cell instead of the file's (prefix sweeps: prompts per group scaled to match).")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Run each cell this many times instead of the file's (repeat k uses seed + k - 1).")
@click.option("--simulate", is_flag=True, help="Replace every server by the simulator with its hardware's GPU and its backend's profile.")
@click.option("--sim-timing", type=click.Choice(["engine", "zero"]), default=None, help=_SIM_TIMING_HELP)
@click.option("--no-keepalive", is_flag=True, help="One connection per request, whatever the file's keepalive says.")
@click.option("--tokenizer", default=None, help="Tokenizer whose vocabulary random prompts draw from instead of the file's (a local directory with tokenizer.json, or a Hugging Face name); replaces its token_id_range.")
@click.option("--tokenizer-revision", default=None, help="Branch, tag or commit of a Hugging Face --tokenizer (or of the model's own) instead of the file's.")
@click.option("--token-id-range", default=None, metavar="LOW:HIGH", help="Random prompt ids from LOW to HIGH - 1, no tokenizer, instead of the file's tokenizer or range.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True, help="Seconds before a request is recorded as timed out.")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds without a byte before a request is recorded as timed out. Default: none.")
@click.option("--no-answer-hint-s", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="Seconds without a byte on a request in flight before the progress line names --stall-timeout and --request-timeout.")
def run(experiment_file: Path, out: Path, run_dir: Path | None, resume: bool, address: str | None, actors: int | None,
        write_report: bool, only: str | None, num_prompts: int | None, repeats: int | None, simulate: bool,
        sim_timing: str | None, no_keepalive: bool, tokenizer: str | None, tokenizer_revision: str | None,
        token_id_range: str | None, request_timeout: float, stall_timeout: float | None,
        no_answer_hint_s: float) -> None:
    """Run every cell of an experiment file.

    \b
    Examples:
      raybench run experiments/quickstart.py
      raybench run experiments/deepseek_r1.py --simulate --only backend=vllm,hardware=H200 --num-prompts 40
      raybench run experiments/deepseek_r1.py --resume          # after an interruption: unfinished cells only
      raybench run experiments/quickstart.py --run-dir runs/quickstart/20260101-120000
      raybench run experiments/my_model.py --tokenizer /models/my-model   # prompts from its vocabulary
      RAY_ADDRESS=auto raybench run experiments/my_cluster.py
    """
    from raybench.experiment import load_experiment
    from raybench.plan import resolve

    _check_number_flags(click.get_current_context())
    prompts = {"tokenizer": tokenizer, "tokenizer_revision": tokenizer_revision,
               "token_id_range": _parse_token_id_range(token_id_range)}
    experiment, cells = resolve(load_experiment(experiment_file), only=only, num_prompts=num_prompts, repeats=repeats,
                                simulate=simulate, sim_timing=sim_timing, prompts=prompts)
    options = {"only": only, "num_prompts": num_prompts, "repeats": repeats, "simulate": simulate,
               "sim_timing": sim_timing, "actors": actors, "no_keepalive": no_keepalive, "tokenizer": tokenizer,
               "tokenizer_revision": tokenizer_revision, "token_id_range": token_id_range,
               "request_timeout": request_timeout, "stall_timeout": stall_timeout}
    overrides: dict = {"stall_timeout_s": stall_timeout} if stall_timeout is not None else {}
    if no_keepalive:
        overrides["keepalive"] = False
    _run(experiment, out=out, address=address, actors=actors, run_dir=run_dir, resume=resume, write_report=write_report,
         cell_ids=frozenset(c.id for c in cells), experiment_file=experiment_file, options=options,
         request_timeout_s=request_timeout, client_overrides=overrides, no_answer_hint_s=no_answer_hint_s)


@main.command(name="plan")
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json (a list of cells) for programs.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Mark the cells already complete in this run directory; the estimate counts only the rest.")
@click.option("--only", default=None, help="Only the cells whose plan fields match, e.g. backend=vllm,hardware=H200,mode=online,concurrency=4|32.")
@click.option("--num-prompts", type=click.IntRange(min=1), default=None, help="As `raybench run --num-prompts`.")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="As `raybench run --repeats`.")
@click.option("--simulate", is_flag=True, help="As `raybench run --simulate`.")
@click.option("--sim-timing", type=click.Choice(["engine", "zero"]), default=None, help="As `raybench run --sim-timing`.")
def plan_command(experiment_file: Path, fmt: str, run_dir: Path | None, only: str | None, num_prompts: int | None,
                 repeats: int | None, simulate: bool, sim_timing: str | None) -> None:
    """Print the cells an experiment runs, which are done, and how long the rest should take; starts nothing.

    The estimate comes from the simulator's cost model for each backend and GPU, plus a guess
    for each server's start (loading a large model takes minutes): a guide for booking time.

    \b
    Examples:
      raybench plan experiments/deepseek_r1.py
      raybench plan experiments/deepseek_r1.py --format json --only backend=vllm,hardware=H200
      raybench plan experiments/quickstart.py --run-dir runs/quickstart/20260101-120000
    """
    import orjson

    from raybench.estimate import estimate_plan, format_duration
    from raybench.experiment import load_experiment
    from raybench.plan import check_resume, format_plan_table, plan_row, resolve
    from raybench.store.rundir import RunDir, safe_name

    experiment, cells = resolve(load_experiment(experiment_file), only=only, num_prompts=num_prompts, repeats=repeats,
                                simulate=simulate, sim_timing=sim_timing)
    rd = RunDir(run_dir) if run_dir is not None else None
    if rd is not None:  # a prediction or another experiment's run: its cells are not this plan's to skip
        rd.check_resumable(experiment.name)
    done = check_resume(cells, rd.completed_cells()) if rd is not None else None
    outcomes = {n: o for n, (o, _) in rd.cell_outcomes().items()} if rd is not None else {}
    estimate = estimate_plan(experiment, cells, done=done or ())
    rows = []
    for c in cells:
        row = plan_row(c, None if done is None else c.id in done, outcomes.get(safe_name(c.id)))
        seconds = estimate.cell_seconds(c.id)
        row["estimate_s"] = None if seconds is None else round(seconds, 1)
        rows.append(row)
    if fmt == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    for row in rows:
        row["estimate"] = "?" if row["estimate_s"] is None else format_duration(row["estimate_s"])
    click.echo(format_plan_table(rows))
    summary = f"{len(rows)} cells"
    if done is not None:
        summary += f", {len(done)} complete"
        unfinished = [r for r in rows if r["outcome"] in ("incomplete", "failed")]
        if unfinished:
            summary += f", {len(unfinished)} incomplete or failed (run again by --resume)"
            for r in unfinished:
                click.echo(f"{r['id']}: {r['outcome']}: {r['outcome_reason']}", err=True)
    summary += f"; estimated time: {format_duration(estimate.total_s)}"
    parts = []
    if estimate.server_start_s:
        parts.append(f"{len(estimate.server_start_s)} server starts {format_duration(sum(estimate.server_start_s.values()))}")
    if estimate.engine_load_s:
        parts.append(f"{len(estimate.engine_load_s)} engine loads {format_duration(sum(estimate.engine_load_s.values()))}")
    if parts:
        summary += f" (of which {', '.join(parts)})"
    if estimate.unknown_cells:
        summary += f", plus {estimate.unknown_cells} cells of unknown duration"
    click.echo(summary, err=True)


def _run(experiment, *, out: Path, address: str | None, actors: int | None, run_dir: Path | None = None,
         resume: bool = False, request_timeout_s: float = 3600.0, client_overrides: dict | None = None,
         write_report: bool = True, cell_ids: frozenset[str] | None = None, experiment_file: Path | None = None,
         options: dict | None = None, no_answer_hint_s: float | None = 60.0) -> None:
    from raybench import cluster
    from raybench.plan import check_resume
    from raybench.store.rundir import RunDir

    cells = [c for c in experiment.cells() if cell_ids is None or c.id in cell_ids]
    # before Ray starts and before any directory is made: a tokenizer that does not load, or chat
    # prompts without one, stop the run with one line; the fallback to token ids is said here once
    sources = _prompt_sources(experiment, cells, client_overrides or {},
                              report=lambda line: click.echo(line, err=True))
    rd = _chosen_run_dir(out, experiment.name, run_dir, resume)
    if rd is not None and rd.path.is_dir():  # a second writer stops here, before Ray starts; held to the report's end
        click.get_current_context().with_resource(rd.writing())
    if rd is not None and rd.plan_json.is_file():  # refuse a resume with other settings before anything starts
        done = check_resume(cells, rd.completed_cells(), _resume_settings(experiment, sources))
        click.echo(f"resuming {rd.path}: {len(done)} of {len(cells)} cells complete, {len(cells) - len(done)} to run", err=True)
    from raybench.runner import RunOptions, Runner, check_client_capacity, check_workloads

    check_workloads(cells)  # a missing or malformed file is one line before Ray takes its seconds to start
    sigterm = signal.getsignal(signal.SIGTERM)
    connected_here = cluster.connect(address)
    handle_sigterm(sigterm)  # after Ray's own handler, so ours wins (the same one, which remembers a SIGTERM)
    import ray

    from raybench.plan import check_hardware

    run_options = RunOptions(actors=actors, request_timeout_s=request_timeout_s, client_overrides=client_overrides or {},
                             no_answer_hint_s=no_answer_hint_s,
                             cell_ids=cell_ids, experiment_file=experiment_file, prompt_sources=sources,
                             invocation={"argv": list(sys.argv), "options": options or {}})
    try:
        check_hardware(experiment, ray.cluster_resources(), backends={c.backend for c in cells})
        check_client_capacity(cells, run_options)
    except BaseException:
        if connected_here:
            cluster.disconnect()
        raise
    if rd is None:  # only now: a refused run leaves no empty directory behind
        rd = RunDir.create(out, experiment.name)
    click.get_current_context().with_resource(rd.writing())  # makes the directory; taken already if it existed
    click.echo(f"run directory: {rd.path}", err=True)
    try:
        summaries = Runner(experiment, rd, run_options, report=_progress_display(no_answer_hint_s)).run()
    except StorageError:
        raise  # its one line already says what is kept and how to go on
    except RaybenchError:
        # the error line follows; this one says what is kept and how to go on
        complete = len(rd.completed_cells())
        kept = (f"{complete} complete cell{'s' if complete != 1 else ''} {'are' if complete != 1 else 'is'} kept in "
                f"{rd.path}; to run the rest" if complete else
                f"no cell completed (what was recorded is in {rd.path}); to run it again")
        click.echo(f"the run stopped: {kept}: {_again(experiment_file, rd.path)}", err=True)
        raise
    finally:
        if connected_here:
            cluster.disconnect()
    if write_report:
        from raybench.report.build import write_run_report

        html = write_run_report(rd.path, warn=lambda line: click.echo(line, err=True))
        if html is not None:
            click.echo(f"report: {html}", err=True)
    click.echo(str(rd.path))
    _check_outcomes(summaries, rd.path, experiment_file)


def _again(experiment_file: Path | None, path: Path) -> str:
    """The command that runs a run directory's unfinished cells."""
    if experiment_file is None:  # raybench bench: one cell, no file to resume
        return "the same command again (a new run directory)"
    return f"raybench run {experiment_file} --resume --run-dir {path}"


def _check_outcomes(summaries: list[dict], path: Path, experiment_file: Path | None) -> None:
    """A run with a cell that is not complete fails, with the command that reruns those cells."""
    from raybench.errors import RunError
    from raybench.store.outcome import outcome_of

    bad = [(s.get("cell_id"), outcome_of(s)) for s in summaries]
    bad = [(cell, o) for cell, o in bad if not o.complete]
    if not bad:
        return
    first = "; ".join(o.line(str(cell)) for cell, o in bad[:3]) + ("; ..." if len(bad) > 3 else "")
    again = _again(experiment_file, path)
    raise RunError(f"{len(bad)} of {len(summaries)} cells did not complete ({first}); "
                   f"their rows are kept in {path}; to run them again: {again}")


def _prompt_sources(experiment, cells, client_overrides: dict, *, report) -> dict:
    """Each backend's prompt source (``raybench.prompting``), resolved once for the whole run."""
    from raybench.loadgen.client import ClientConfig
    from raybench.prompting import prompt_sources

    chat = "chat" in client_overrides.get("endpoint", ClientConfig.endpoint)
    return prompt_sources(experiment, {c.backend for c in cells}, chat=chat, report=report)


def _resume_settings(experiment, sources: dict) -> dict:
    """Each backend's prompt source and sampling, as the runner records them beside its cells."""
    from raybench.plan import run_settings

    return {name: run_settings(source.record, experiment.sampling.to_json(), experiment.backend(name).timing_identity())
            for name, source in sources.items()}


def _chosen_run_dir(out: Path, experiment_name: str, run_dir: Path | None, resume: bool):
    """The run directory given or to continue; None: a new one under ``out``, made once the run may start."""
    from raybench.store.rundir import RunDir

    if run_dir is not None:
        if resume and not (run_dir / "plan.json").is_file():
            raise ConfigError(f"--resume: {run_dir} holds no run (no plan.json); leave out --resume to start one there")
        rd = RunDir(run_dir)
    else:
        rd = RunDir.latest(out, experiment_name) if resume else None
    if rd is not None:  # before Ray starts: the runner would count a prediction's cells as measured and skip them
        rd.check_resumable(experiment_name)
    return rd


@main.command(name="report")
@click.argument("source")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory for report.html and charts/. Default: the run directory itself; for a file, ./report-<file name>.")
@click.option("--images/--no-images", default=True, show_default=True, help="Write PNG and SVG of every chart under charts/.")
def report_command(source: str, out: Path | None, images: bool) -> None:
    """Draw the report of a run directory, a results file, or `published` (the seed's results).

    \b
    SOURCE: a raybench run directory, vLLM's --save-result JSON, SGLang's bench_serving JSONL,
    dstack's tidy results CSV, or `published`.
    Examples:
      raybench report runs/quickstart/20260101-120000
      raybench report published --out seed-report
    """
    from raybench.report import build_report
    from raybench.store.rundir import safe_name

    if out is None and not Path(source).is_dir():
        out = Path(f"report-{safe_name(Path(source).stem)}")
    result = build_report(source, out, images=images)
    for line in result.left_out.values():
        click.echo(f"left out of the charts: {line}", err=True)
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    for name, why in result.skipped.items():
        click.echo(f"not drawn: {name} ({why})", err=True)
    click.echo(f"{len(result.drawn)} charts drawn, {len(result.images)} image files", err=True)
    click.echo(str(result.html))


@main.command(name="compare")
@click.argument("sources", nargs=-1, required=True)
@click.option("--reference", default=None, help="The baseline: a run directory, vLLM JSON, SGLang JSONL, dstack CSV, or `published` (the seed's H200/MI300X results). Default: the first SOURCE.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory for the comparison report. Default: ./comparison-<YYYYmmdd-HHMMSS>. A run directory gets it in its comparison/ subdirectory, so that the run's own report.html and charts/ stay.")
@click.option("--images/--no-images", default=True, show_default=True, help="Write PNG and SVG of every chart under charts/.")
def compare_command(sources: tuple[str, ...], reference: str | None, out: Path | None, images: bool) -> None:
    """Put runs side by side: the same charts, one series per run, and ratios per matching cell.

    \b
    Examples:
      raybench compare runs/quickstart/20260101-120000 runs/quickstart/20260102-090000
      raybench compare runs/deepseek_r1/20260101-120000 --reference published
      raybench compare runs/deepseek_r1/20260101-120000 --reference vllm-128qps.json
    """
    import datetime as dt

    from raybench.report import compare_sources

    out = out or Path(f"comparison-{dt.datetime.now():%Y%m%d-%H%M%S}")
    result = compare_sources(sources, out, reference=reference, images=images)
    if result.html.parent != out:
        click.echo(f"--out {out} is a run directory: the comparison goes to {result.html.parent}, so that the "
                   "run's own report stays", err=True)
    click.echo(result.table)
    click.echo(f"comparison report: {result.html}")


@main.command(name="predict")
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--only", default=None, help="Only the cells whose plan fields match, e.g. backend=vllm,hardware=H200,concurrency=4|32.")
@click.option("--num-prompts", type=click.IntRange(min=1), default=None, help="As `raybench run --num-prompts`.")
@click.option("--profiles", default=None, help="Engine profiles JSON from `raybench calibrate`. Default: the shipped ones (fitted on the seed's output-800 rows).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True, help="Root of run directories (the run is <experiment>-prediction/<stamp>).")
@click.option("--reference", multiple=True, help="Print the error of the prediction against these results (a results file, a run dir, or `published`).")
@click.option("--report/--no-report", "write_report", default=True, show_default=True, help="Write report.html into the run directory.")
def predict_command(experiment_file: Path, only: str | None, num_prompts: int | None, profiles: str | None,
                    out: Path, reference: tuple[str, ...], write_report: bool) -> None:
    """Predict every cell of an experiment in virtual time, as a run directory.

    \b
    The simulator's engine core runs each cell with the servers' launch settings and the
    engine x GPU profiles; analysis, compare and report read the run dir as a measured one, and
    every number in it is marked as a prediction.
    Examples:
      raybench predict experiments/deepseek_r1.py --reference published
      raybench predict experiments/deepseek_r1.py --only hardware=H200 --profiles my-profiles.json
    """
    import time

    from raybench.experiment import load_experiment
    from raybench.plan import resolve
    from raybench.predict import extrapolation_lines, predict_run, resent_prompt_lines

    t0 = time.perf_counter()
    experiment, cells = resolve(load_experiment(experiment_file), only=only, num_prompts=num_prompts)
    reference_frame = None
    if reference:
        from raybench.calibration import load_reference

        # a prediction against a prediction would print an error table of nothing measured
        reference_frame = load_reference(reference, report=lambda line: click.echo(line, err=True), measured_only=True,
                                         needs_measured="predict --reference compares the prediction with")
    run_dir, summaries = predict_run(experiment, cells, out, profiles_path=profiles, report=write_report)
    click.echo(f"predicted {len(cells)} cells in {time.perf_counter() - t0:.1f} s (virtual time; every number "
               "is a prediction)", err=True)
    for line in (*extrapolation_lines(summaries), *resent_prompt_lines(summaries)):
        click.echo(line, err=True)
    if reference_frame is not None:
        from raybench.calibration import compare_to_reference, error_table

        click.echo("prediction vs reference: absolute % error (median / max), per engine x GPU")
        click.echo(error_table(compare_to_reference(summaries, reference_frame)))
        if write_report:  # the seed's charts with the predicted and the reference points together
            from raybench.report import compare_sources

            overlay = compare_sources([str(run_dir.path), *reference[1:]], run_dir.path / "comparison",
                                      reference=reference[0], images=False)
            click.echo(f"overlay report: {overlay.html}", err=True)
    click.echo(str(run_dir.path))


@main.command(name="calibrate")
@click.option("--reference", "references", multiple=True, required=True, help="Measured results to fit: a results file, a run dir, or `published` (repeatable).")
@click.option("--only", default=None, help="Fit on these rows only: KEY=V1|V2,... over backend, hardware, mode, concurrency, batch_size, input_len, output_len, prefix_len ('none' for an empty field).")
@click.option("--experiment", "experiment_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Launch settings for rows that do not record theirs (published rows, results files, run dirs of an earlier raybench): this experiment's servers. Default: the seed's servers.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Profiles JSON to write.")
def calibrate_command(references: tuple[str, ...], only: str | None, experiment_file: Path | None, out: Path) -> None:
    """Fit the simulator's engine x GPU profiles to measured results.

    \b
    Every engine x GPU pair present in the selected rows gets a profile; the fit is robust
    (Huber in log space) over throughput, mean TTFT, TPOT and E2E, and deterministic.
    Examples:
      raybench calibrate --reference published --only output_len=800,prefix_len=0 --out profiles.json
      raybench calibrate --reference runs/my_exp/20260101-120000 --out mine.json

    A raybench run dir records each server's launch as the simulator sees it (env.json), so its
    rows need no --experiment.
    """
    from raybench.calibration import (calibrate, check_out, error_table, experiment_launches, fit_groups,
                                      load_reference, seed_launches, select_rows, write_profiles)
    from raybench.sim.calibrate import EQUAL_FIT

    check_out(out, references)
    frame = select_rows(load_reference(references, report=lambda line: click.echo(line, err=True),
                                       measured_only=True), only)
    if experiment_file is not None:
        from raybench.experiment import load_experiment

        launches = experiment_launches(load_experiment(experiment_file))
    else:
        launches = seed_launches()
    fitted_on = f"{' + '.join(references)}" + (f" where {only}" if only else "") + f" ({frame.height} rows)"
    fits = calibrate(frame, launches, fitted_on=fitted_on, report=lambda line: click.echo(line, err=True))
    write_profiles(fits, out)
    click.echo(error_table(fit_groups(fits)))
    click.echo("regimes the fitted rows went through (a prediction needing another one is marked extrapolated):")
    for fit in fits:
        regimes = ", ".join(fit.profile.fitted_regimes or ()) or "plain prefill and decode only"
        click.echo(f"  {fit.profile.key:20s} {regimes}")
    for fit in fits:
        if fit.pool_unpinned is not None:
            low, high = fit.pool_unpinned
            click.echo(f"{fit.profile.key}: the rows do not pin the KV pool (reserves {low:g} to {high:g} GiB "
                       f"fit within {EQUAL_FIT:.0%} of each other), so cells the pool limits are marked "
                       "extrapolated; a row that fills the pool (a longer output, a larger batch) pins it")
    click.echo(f"{len(fits)} profiles written to {out}")


def _progress_display(no_answer_hint_s: float | None = 60.0):
    """Progress on stderr (stdout carries only the run dir): redrawn live on a terminal, plain lines otherwise."""
    from raybench.telemetry.progress import ProgressDisplay

    return ProgressDisplay.for_stream(sys.stderr, no_answer_hint_s=no_answer_hint_s)


main.add_command(sim_command, name="sim")

if __name__ == "__main__":  # pragma: no cover
    main()
