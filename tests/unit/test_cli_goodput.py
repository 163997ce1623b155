"""--goodput as vLLM spells it (one option, several KEY:MS words), and as every document of raybench shows it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from raybench import cli
from raybench.cli import _SloWordsOption, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench_slos(monkeypatch):
    """Run ``raybench bench ARGS`` up to the library call; returns (exit code, output, the SLOs it would run with)."""
    seen: list[dict[str, float]] = []
    monkeypatch.setattr(cli, "_run", lambda experiment, **kw: seen.append(dict(experiment.goodput_slos_ms)))
    monkeypatch.setattr("raybench.loadgen.preflight.check_server", lambda url, model: model or "m")

    def invoke(args: list[str]) -> tuple[int, str, dict[str, float] | None]:
        result = CliRunner().invoke(main, args)
        return result.exit_code, result.output, seen.pop() if seen else None

    return invoke


def _bench_commands(text: str) -> list[str]:
    """Each ``raybench bench`` command in a text, its backslash-continued lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.strip() for m in re.findall(r"^\s*(raybench bench .*)$", joined, re.MULTILINE)]


def _documented_goodput_commands() -> list[tuple[str, str]]:
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    texts["raybench bench --help"] = CliRunner().invoke(main, ["bench", "--help"]).output
    return [(where, cmd) for where, text in texts.items() for cmd in _bench_commands(text) if "--goodput" in cmd]


DOCUMENTED = _documented_goodput_commands()


def test_the_documents_show_goodput():
    assert {where for where, _ in DOCUMENTED} >= {"README.md", "docs/workloads.md", "raybench bench --help"}


@pytest.mark.parametrize(("where", "command"), DOCUMENTED, ids=[f"{w}: {c[-60:]}" for w, c in DOCUMENTED])
def test_every_documented_goodput_command_runs_as_written(bench_slos, where, command):
    code, output, slos = bench_slos(shlex.split(command)[1:])
    assert code == 0, output  # was: Got unexpected extra argument (tpot:100)
    expected = {k: float(v) for k, v in re.findall(r"\b(ttft|tpot|e2el):([\d.]+)", command)}
    assert slos == expected and len(expected) >= 1


@pytest.mark.parametrize("goodput", [
    ["--goodput", "ttft:1", "tpot:2"],  # vLLM's spelling
    ["--goodput", "ttft:1", "--goodput", "tpot:2"],
    ["--goodput", "ttft:1 tpot:2"],
    ["--goodput=ttft:1", "tpot:2"],
    ["--goodput", "ttft:1,tpot:2"],
    ["--goodput", "ttft:1", "tpot:2", "--seed", "3"],
])
def test_each_spelling_of_the_slos_gives_the_same(bench_slos, goodput):
    code, output, slos = bench_slos(["bench", "--backend", "sim", *goodput])
    assert code == 0, output
    assert slos == {"ttft": 1.0, "tpot": 2.0}


def test_a_word_that_is_not_key_colon_number_ends_the_slos():
    @click.command()
    @click.argument("experiment_file")
    @click.option("--goodput", cls=_SloWordsOption)
    def command(experiment_file: str, goodput: tuple[str, ...]) -> None:
        click.echo(f"{experiment_file} {list(goodput)}")

    result = CliRunner().invoke(command, ["--goodput", "ttft:1", "e2el:2.5", "experiments/x.py"])
    assert result.exit_code == 0, result.output
    assert result.output == "experiments/x.py ['ttft:1', 'e2el:2.5']\n"


@pytest.mark.parametrize("goodput", [["--goodput", "ttft:inf"], ["--goodput", "ttft:1", "tpot:inf"]])
def test_an_infinite_slo_is_refused_before_anything_runs(bench_slos, goodput):
    code, output, slos = bench_slos(["bench", "--backend", "sim", *goodput])
    assert code == 2 and slos is None
    assert output.splitlines()[-1].startswith("Error: Invalid value for --goodput: '")
    assert "the SLO must be a finite number of milliseconds > 0, e.g." in output


def test_the_search_hint_s_example_works_as_written(bench_slos):
    args = ["bench", "--backend", "sim", "--search", "concurrency", "--search-grid", "1,2"]
    code, output, _ = bench_slos(args)
    assert code == 2
    example = re.search(r"e\.g\. (--goodput .*)$", output.strip()).group(1)
    code, output, slos = bench_slos([*args, *shlex.split(example)])
    assert code == 0, output
    assert slos == {"ttft": 500.0, "tpot": 50.0}
