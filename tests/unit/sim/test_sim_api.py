"""Request validation: what becomes a 400 / 404 and how prompts are counted."""

import orjson
import pytest

from raybench.sim.api import DEFAULT_MAX_TOKENS, ApiError, parse_generation


def _parse(body, chat=False, raw=None, context_tokens=None):
    return parse_generation(raw if raw is not None else orjson.dumps(body), chat=chat, served_model="m",
                            context_tokens=context_tokens)


def test_prompt_counting_and_defaults():
    assert _parse({"prompt": "one two  three\nfour"}).prompt_tokens == 4
    assert _parse({"prompt": [5, 6, 7]}).prompt_tokens == 3
    assert _parse({"prompt": [[5, 6]]}).prompt_tokens == 2
    req = _parse({"messages": [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": [{"type": "text", "text": "hi you"}]}]}, chat=True)
    assert req.prompt_tokens == 4 and req.max_tokens == DEFAULT_MAX_TOKENS  # no context length known
    assert _parse({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5,
                   "max_completion_tokens": 9}, chat=True).max_tokens == 9


def test_chat_defaults_to_the_context_left_and_completions_to_16():
    # vLLM: ChatCompletionRequest takes max_model_len - prompt tokens, CompletionRequest 16
    chat = {"messages": [{"role": "user", "content": "one two three"}]}
    assert _parse(chat, chat=True, context_tokens=100).max_tokens == 97
    assert _parse({**chat, "max_tokens": 5}, chat=True, context_tokens=100).max_tokens == 5
    assert _parse({"prompt": "one two three"}, context_tokens=100).max_tokens == DEFAULT_MAX_TOKENS
    with pytest.raises(ApiError) as err:
        _parse(chat, chat=True, context_tokens=3)
    assert err.value.status == 400 and err.value.param == "messages"
    assert "maximum context length is 3 tokens" in err.value.message


def test_continuous_usage_needs_include_usage():
    req = _parse({"prompt": "a", "stream": True, "stream_options": {"continuous_usage_stats": True}})
    assert not req.include_usage and not req.continuous_usage


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (None, 400, "Invalid JSON"),
        ({"max_tokens": 3}, 400, "`prompt` is required"),
        ({"prompt": ""}, 400, "must not be empty"),
        ({"prompt": ["a", "b"]}, 400, "batches are not supported"),
        ({"prompt": "a", "max_tokens": -1}, 400, "max_tokens must be at least 1, got -1"),
        ({"prompt": "a", "max_tokens": 2, "min_tokens": 3}, 400, "min_tokens"),
        ({"prompt": "a", "temperature": -0.5}, 400, "temperature"),
        ({"prompt": "a", "model": "other"}, 404, "The model `other` does not exist."),
        ({"prompt": "a", "stream_options": {"include_usage": True}}, 400, "stream=True"),
        ({"prompt": "a", "n": 2}, 400, "n=1"),
    ],
)
def test_bad_requests(body, status, needle):
    with pytest.raises(ApiError) as err:
        _parse(body, raw=b"{nope" if body is None else None)
    assert err.value.status == status and needle in err.value.message
    error = orjson.loads(err.value.body())["error"]
    assert error["code"] == status and needle in error["message"]
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")
