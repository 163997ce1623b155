"""benchmarks/prompt_tokenize_cost.py: the seed's two kinds of prompt, built as its clients built them, and timed."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from raybench.workloads.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from tiny_tokenizer import make_tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prompt_tokenize_cost.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("prompt_tokenize_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"), kind="bpe")


def test_a_generated_shared_prefix_prompt_draws_from_the_whole_vocabulary(script, tok_dir):
    tok = load_tokenizer(str(tok_dir))
    drawn = []

    class Recording(random.Random):
        def choices(self, population, k):
            assert population == range(tok.vocab_size)  # special tokens too, as get_vocab().values()
            out = super().choices(population, k=k)
            drawn.append(out)
            return out

    prompt = script.generated_shared_prefix(tok, Recording(1), 200, 120)
    assert [len(ids) for ids in drawn] == [200, 120]
    assert prompt == f"{tok.decode(drawn[0])}\n\n{tok.decode(drawn[1])}"
    assert prompt == script.generated_shared_prefix(tok, random.Random(1), 200, 120)  # seeded


def test_natural_prompts_are_windows_of_the_text_repeated_where_it_is_short(script, tok_dir):
    tok = load_tokenizer(str(tok_dir))
    text = "the quick brown fox jumps over the lazy dog " * 5
    prompts = script.natural(tok, text, count=4, length=300)
    assert len(prompts) == 4 and len(set(prompts)) > 1
    for prompt in prompts:  # a window's ends cut words, which encode again a little differently
        assert abs(len(tok.encode(prompt)) - 300) <= 15
    with pytest.raises(SystemExit, match="no tokens"):
        script.natural(tok, "", count=1, length=10)


def test_it_prints_each_kind_and_the_bursts(script, tok_dir, tmp_path, monkeypatch, capsys):
    text = tmp_path / "text.txt"
    text.write_text("a sentence of plain words, as a person writes them. " * 40)
    monkeypatch.setattr(sys, "argv", ["prompt_tokenize_cost.py", "--tokenizer", str(tok_dir), "--text", str(text),
                                      "--prefix-len", "60", "--question-len", "40", "--prompts", "3", "--repeats", "2"])
    script.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("3 prompts x 2 encodes") and "burst 128 s" in lines[1]
    rows = {line[:26].strip(): line[26:].split() for line in lines[2:4]}
    assert set(rows) == {"generated-shared-prefix", "natural text"}
    # random ids decoded do not encode back to as many ids (SGLang counts what they encode to)
    assert float(rows["generated-shared-prefix"][1]) > 0 and 85 <= float(rows["natural text"][1]) <= 115
    for _, _, median, p90, *bursts in rows.values():
        assert 0 < float(median) <= float(p90)
        assert [float(b) for b in bursts] == pytest.approx([c * float(median) / 1e3 for c in (32, 64, 128)], abs=0.01)
    assert lines[4] == "the front-end reading needs 75 ms a request: 2.4 s for a burst of 32, 4.8 s for a burst of 64, 9.6 s for a burst of 128"


def test_a_tokenizer_that_does_not_load_is_one_line(script, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["prompt_tokenize_cost.py", "--tokenizer", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="^--tokenizer: tokenizer .*: no such file or directory"):
        script.main()
