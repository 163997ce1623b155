"""Tokenizers and exact-length prompts, on tiny tokenizers trained here (no network)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.workloads import RandomWorkload, SharedPrefixWorkload
from raybench.workloads.hf_tokenizer import HFTokenizer
from raybench.workloads.prompts import fit_prompt
from raybench.workloads.tokenizer import (
    WORD_TOKENIZER,
    Tokenizer,
    WordTokenizer,
    chat_overhead_tokens,
    load_tokenizer,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
from tiny_tokenizer import make_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("bpe"), kind="bpe")


@pytest.fixture(scope="module")
def word_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("word"), kind="word")


def test_loads_a_local_directory_once_per_process(bpe_dir: Path) -> None:
    tok = load_tokenizer(str(bpe_dir))
    assert isinstance(tok, HFTokenizer) and isinstance(tok, Tokenizer)
    assert load_tokenizer(str(bpe_dir)) is tok
    assert tok.name == str(bpe_dir.resolve())
    # the special tokens are the added ones; none of them is ever drawn
    assert tok.special_ids == frozenset(range(6))
    assert not set(tok.sample_ids().tolist()) & tok.special_ids
    assert tok.encode("the quick brown fox") and tok.decode(tok.encode("the quick brown fox")) == "the quick brown fox"


def test_encode_adds_no_special_tokens(word_dir: Path) -> None:
    tok = load_tokenizer(str(word_dir))
    assert len(tok.encode("the quick brown fox")) == 4


def test_describe_names_the_file_by_content_hash(bpe_dir: Path, word_dir: Path) -> None:
    a, b = load_tokenizer(str(bpe_dir)).describe(), load_tokenizer(str(word_dir)).describe()
    assert a["vocab_size"] == load_tokenizer(str(bpe_dir)).vocab_size > 400
    assert len(a["tokenizer_json_sha256"]) == 16 and a["tokenizer_json_sha256"] != b["tokenizer_json_sha256"]
    assert a["source"] == "local" and a["revision"] is None
    assert a["chat_template"]["overhead_tokens"] > 0


def test_chat_template_overhead_is_counted(word_dir: Path) -> None:
    tok = load_tokenizer(str(word_dir))
    messages = [{"role": "user", "content": "the quick brown fox"}]
    assert tok.render_chat(messages) == "<s><|im_start|>user\nthe quick brown fox<|im_end|>\n<|im_start|>assistant\n"
    assert tok.count_chat(messages) == len(tok.encode(tok.render_chat(messages)))
    assert chat_overhead_tokens(tok, "the quick brown fox") == tok.count_chat(messages) - 4 > 0


def test_without_a_chat_template_the_messages_count_alone(tmp_path: Path) -> None:
    tok = load_tokenizer(str(make_tokenizer(tmp_path / "plain", kind="word", chat_template=False)))
    assert not tok.has_chat_template
    assert tok.count_chat([{"role": "user", "content": "the quick brown fox"}]) == 4
    assert tok.describe()["chat_template"] is None


def test_pickles_by_reference(bpe_dir: Path) -> None:
    tok = load_tokenizer(str(bpe_dir))
    data = pickle.dumps(tok)
    assert len(data) < 300  # the name, not the vocabulary
    assert pickle.loads(data) is tok  # the same process: the cached object
    word = WordTokenizer(vocab_low=5, vocab_high=50)
    assert pickle.loads(pickle.dumps(word)).sample_ids().tolist() == list(range(5, 50))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "tokenizer='' is not allowed"),
        ("./no/such/dir", "tokenizer './no/such/dir': no such file or directory"),
    ],
)
def test_bad_names_are_one_line_errors(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        load_tokenizer(name)
    assert "\n" not in str(err.value)


def test_a_hub_name_offline_and_not_cached_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache") as err:
        load_tokenizer("no-such-org/no-such-model-xyz")
    assert "\n" not in str(err.value)


def test_a_directory_without_tokenizer_json_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(ConfigError, match="holds no tokenizer.json"):
        load_tokenizer(str(tmp_path / "model"))


def test_word_tokenizer_is_the_simulators_count() -> None:
    tok = load_tokenizer(WORD_TOKENIZER)
    assert isinstance(tok, WordTokenizer)
    assert tok.decode([12, 345]) == "w12 w345" and tok.encode("w12 w345") == [12, 345]
    assert len(tok.encode("hello there world")) == 3
    assert tok.count_chat([{"role": "system", "content": "a b"}, {"role": "user", "content": "c"}]) == 3
    assert tok.count_chat([{"role": "user", "content": ""}]) == 1


@pytest.mark.parametrize("kind", ["bpe", "word"])
@pytest.mark.parametrize("length", [1, 2, 7, 300, 2000])
def test_fitted_prompts_have_exact_length_through_a_round_trip(kind: str, length: int, bpe_dir: Path, word_dir: Path) -> None:
    tok = load_tokenizer(str(bpe_dir if kind == "bpe" else word_dir))
    for i in range(30):
        prompt = fit_prompt(tok, np.random.default_rng([3, i]), length)
        assert prompt.exact
        assert prompt.ids.size == length
        assert tok.encode(prompt.text) == prompt.ids.tolist()
        assert not set(prompt.ids.tolist()) & tok.special_ids


def test_bpe_round_trip_really_moves_lengths(bpe_dir: Path) -> None:
    """The reason for fitting: raw random ids do not survive decode -> encode with byte-level BPE."""
    tok = load_tokenizer(str(bpe_dir))
    ids = tok.sample_ids()[np.random.default_rng(0).integers(0, tok.sample_ids().size, 300)].tolist()
    assert len(tok.encode(tok.decode(ids))) != 300


def test_a_question_keeps_its_prefix_ids_and_text(bpe_dir: Path) -> None:
    tok = load_tokenizer(str(bpe_dir))
    prefix = fit_prompt(tok, np.random.default_rng(1), 200)
    for i in range(30):
        prompt = fit_prompt(tok, np.random.default_rng([2, i]), 50, prefix)
        assert prompt.exact and prompt.ids.size == 250
        assert prompt.ids[:200].tolist() == prefix.ids.tolist()
        assert prompt.text.startswith(prefix.text)
        assert tok.encode(prompt.text) == prompt.ids.tolist()


def test_random_workload_with_a_tokenizer_is_exact_and_the_same_under_any_sharding(bpe_dir: Path) -> None:
    workload = RandomWorkload(num_prompts=40, input_len=120, output_len=8, range_ratio=0.5, seed=7,
                              tokenizer=str(bpe_dir), text=True)
    tok = load_tokenizer(str(bpe_dir))
    whole = workload.build(range(40))
    shards = [workload.build(range(k, 40, 3)) for k in range(3)]
    by_id = {s.request_id: s for shard in shards for s in shard}
    assert all(by_id[s.request_id] == s for s in whole)
    for spec in whole:
        assert tok.encode(spec.prompt_text) == spec.prompt_token_ids.tolist()
        assert spec.prompt_tokens == spec.prompt_token_ids.size
    # lengths are drawn as without a tokenizer: only the ids change
    plain = RandomWorkload(num_prompts=40, input_len=120, output_len=8, range_ratio=0.5, seed=7).build(range(40))
    assert [s.prompt_tokens for s in whole] == [s.prompt_tokens for s in plain]
    assert [s.max_tokens for s in whole] == [s.max_tokens for s in plain]


def test_without_text_the_ids_are_sent_and_the_text_is_not_built(bpe_dir: Path) -> None:
    spec = RandomWorkload(num_prompts=1, input_len=50, output_len=1, tokenizer=str(bpe_dir)).build([0])[0]
    assert spec.prompt_text is None
    assert spec.prompt_token_ids.max() < load_tokenizer(str(bpe_dir)).vocab_size


def test_prefix_workload_groups_share_prefix_text(bpe_dir: Path) -> None:
    workload = SharedPrefixWorkload(num_groups=3, prompts_per_group=6, prefix_len=80, question_len=40,
                                    output_len=2, tokenizer=str(bpe_dir), text=True)
    tok = load_tokenizer(str(bpe_dir))
    specs = workload.build(range(workload.num_requests))
    for group in range(3):
        members = [s for s in specs if s.group == group]
        prefix_ids = members[0].prompt_token_ids[:80].tolist()
        prefix_text = tok.decode(prefix_ids)
        for spec in members:
            assert spec.prompt_tokens == 120
            assert spec.prompt_token_ids[:80].tolist() == prefix_ids
            assert spec.prompt_text.startswith(prefix_text)
            assert tok.encode(spec.prompt_text) == spec.prompt_token_ids.tolist()
    reversed_build = {s.request_id: s for s in workload.build(list(reversed(range(workload.num_requests))))}
    assert all(reversed_build[s.request_id] == s for s in specs)


def test_word_tokenizer_text_is_the_id_prompt_in_words() -> None:
    with_words = RandomWorkload(num_prompts=5, input_len=20, output_len=2, tokenizer=WORD_TOKENIZER, text=True)
    plain = RandomWorkload(num_prompts=5, input_len=20, output_len=2)
    for a, b in zip(with_words.build(range(5)), plain.build(range(5))):
        assert np.array_equal(a.prompt_token_ids, b.prompt_token_ids)
        assert a.prompt_text == " ".join(f"w{i}" for i in b.prompt_token_ids.tolist())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"text": True}, "random.text=True is not allowed: False without a tokenizer"),
        ({"tokenizer": ""}, "random.tokenizer='' is not allowed"),
        ({"tokenizer_revision": "main"}, "random.tokenizer_revision='main' is not allowed"),
        ({"tokenizer": "x", "text": "yes"}, "random.text='yes' is not allowed"),
    ],
)
def test_tokenizer_fields_are_validated(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RandomWorkload(num_prompts=1, input_len=5, output_len=1, **params)


class _FakeAutoTokenizer:
    """Stands in for transformers' AutoTokenizer (not a dependency) at the seam raybench calls."""

    loaded: list[tuple[str, str | None]] = []

    def __init__(self, inner) -> None:
        self._inner = inner
        self.all_special_ids = sorted(inner.special_ids)
        self.chat_template = "template"

    @classmethod
    def from_pretrained(cls, name: str, revision: str | None = None):
        cls.loaded.append((name, revision))
        return cls(load_tokenizer(str(cls.source)))

    def __len__(self) -> int:
        return self._inner.vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1] if add_special_tokens else []) + self._inner.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._inner.decode(ids)

    def get_vocab(self) -> dict[str, int]:
        return {str(i): i for i in range(self._inner.vocab_size)}

    def apply_chat_template(self, messages, tokenize: bool, add_generation_prompt: bool) -> str:
        assert not tokenize and add_generation_prompt
        return self._inner.render_chat(messages)


def test_a_model_without_tokenizer_json_goes_through_transformers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                  word_dir: Path) -> None:
    import types

    _FakeAutoTokenizer.source = word_dir
    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(AutoTokenizer=_FakeAutoTokenizer))
    (tmp_path / "slow").mkdir()
    tok = load_tokenizer(str(tmp_path / "slow"))
    inner = load_tokenizer(str(word_dir))
    assert _FakeAutoTokenizer.loaded[-1] == (str((tmp_path / "slow").resolve()), None)
    assert tok.encode("the quick brown fox") == inner.encode("the quick brown fox")  # no BOS added
    assert tok.vocab_size == inner.vocab_size and tok.special_ids == inner.special_ids
    assert tok.count_chat([{"role": "user", "content": "the fox"}]) == inner.count_chat([{"role": "user", "content": "the fox"}])
    assert tok.describe()["kind"] == "transformers"
    prompt = fit_prompt(tok, np.random.default_rng(0), 25)
    assert prompt.exact and tok.encode(prompt.text) == prompt.ids.tolist()
    assert pickle.loads(pickle.dumps(tok)) is tok
