"""Reading OpenAI-style generation requests, and the JSON error bodies for bad ones.

The sim tokenizer counts one token per whitespace-separated word of a text prompt and one per
id of a token-id list; chat prompts count the words of every message (at least 1 token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

#: max_tokens when a completions request gives none (OpenAI's documented completions default,
#: vLLM's CompletionRequest); also a chat request's where the server's context length is unknown
DEFAULT_MAX_TOKENS = 16

# Top-level fields stay raw JSON until asked for: a 3200-id prompt then costs a byte count,
# not 3200 Python ints (about 60 us a request, which at a burst of 1024 requests would delay
# every arrival stamp behind it).
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ID_LIST_BYTES = b"0123456789, \t\r\n"


@dataclass(frozen=True, slots=True)
class GenRequest:
    """The fields of a generation request the simulator acts on."""

    chat: bool
    prompt_tokens: int
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    continuous_usage: bool  # usage on every chunk (only together with include_usage, as vLLM)
    prompt_raw: msgspec.Raw | None = None  # the prompt as sent (completions; no copy), for the prefix cache


def prompt_segments(raw: msgspec.Raw | bytes | None, block_tokens: int) -> tuple:
    """A prompt as ((key, tokens), ...) blocks whose keys chain every block before them.

    Token-id lists are cut every ``block_tokens`` ids, text every ``block_tokens`` words; equal
    prefixes give equal keys, so the engine's prefix cache finds them. Empty when unknown.
    """
    if not raw:
        return ()
    data = bytes(raw).strip()
    if data[:1] == b"[":
        items = data[1:-1].replace(b" ", b"").split(b",")
    else:
        try:
            text = orjson.loads(data)
        except orjson.JSONDecodeError:
            return ()
        items = [w.encode() for w in text.split()] if isinstance(text, str) else []
    segments, key = [], 0
    for i in range(0, len(items), block_tokens):
        block = items[i:i + block_tokens]
        key = hash((key, b",".join(block)))
        segments.append((key, len(block)))
    return tuple(segments)


class ApiError(Exception):
    """A request the server answers with an OpenAI-style error (status, message, type, param)."""

    def __init__(
        self, status: int, message: str, err_type: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.err_type, self.param)


def error_body(status: int, message: str, err_type: str, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": status}})


def parse_generation(raw: bytes, *, chat: bool, served_model: str, context_tokens: int | None = None) -> GenRequest:
    """Validate a /v1/completions or /v1/chat/completions body; raises ApiError.

    ``context_tokens`` is the server's max_model_len (None: unknown). A chat request without
    max_tokens gets the context its prompt leaves, as vLLM's ChatCompletionRequest does, so a
    chat client that sets no length sees answers as long as a real server's, not 16 tokens.
    """
    try:
        fields = _FIELDS.decode(raw)
    except msgspec.DecodeError:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ApiError(400, f"Invalid JSON body: {err}") from None
        raise ApiError(400, "The request body must be a JSON object") from None
    prompt = None if chat else fields.pop("prompt", None)
    body = {name: orjson.loads(bytes(value)) for name, value in fields.items()}
    model = body.get("model")
    if model is not None and model != served_model:
        raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    prompt_tokens = _chat_tokens(body) if chat else _prompt_tokens(prompt)
    max_tokens = _max_tokens(body, chat, prompt_tokens, context_tokens)
    min_tokens = _int_field(body, "min_tokens", 0)
    if min_tokens < 0 or min_tokens > max_tokens:
        raise ApiError(
            400, f"min_tokens must be in 0..max_tokens ({max_tokens}), got {min_tokens}.", param="min_tokens"
        )
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0
    ):
        raise ApiError(400, f"temperature must be a number >= 0, got {temperature!r}.", param="temperature")
    n = body.get("n")
    if n not in (None, 1):
        raise ApiError(400, f"the simulator supports n=1 only, got n={n!r}.", param="n")
    stream = _bool_field(body, "stream")
    include_usage, continuous = _stream_options(body, stream)
    return GenRequest(
        chat=chat,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=_bool_field(body, "ignore_eos"),
        stream=stream,
        include_usage=include_usage,
        continuous_usage=include_usage and continuous,
        prompt_raw=prompt,
    )


def _prompt_tokens(raw: msgspec.Raw | None) -> int:
    if raw is None:
        raise ApiError(400, "`prompt` is required.", param="prompt")
    data = bytes(raw)
    if data[:1] == b"[" and data[-1:] == b"]" and not data[1:-1].translate(None, _ID_LIST_BYTES):
        count = data.count(b",") + 1 if data[1:-1].strip() else 0  # a flat list of token ids
        if count == 0:
            raise ApiError(400, "`prompt` must not be empty.", param="prompt")
        return count
    prompt = orjson.loads(data)
    if prompt is None:
        raise ApiError(400, "`prompt` is required.", param="prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        count = len(prompt.split())
    elif isinstance(prompt, list) and set(map(type, prompt)) <= {int}:  # C speed: prompts run to 100k ids
        count = len(prompt)
    else:
        raise ApiError(
            400, "`prompt` must be a string or a list of token ids (batches are not supported).", param="prompt"
        )
    if count == 0:
        raise ApiError(400, "`prompt` must not be empty.", param="prompt")
    return count


def _chat_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` is required: a non-empty list.", param="messages")
    words = 0
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise ApiError(400, "each message must be an object with a `role`.", param="messages")
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += len(part["text"].split())
        elif content is not None:
            raise ApiError(400, "message `content` must be a string or a list of parts.", param="messages")
    return max(words, 1)


def _max_tokens(body: dict[str, Any], chat: bool, prompt_tokens: int, context_tokens: int | None) -> int:
    name = "max_tokens"
    value = body.get("max_tokens")
    if chat and body.get("max_completion_tokens") is not None:
        name, value = "max_completion_tokens", body["max_completion_tokens"]
    if value is None:
        if not chat or context_tokens is None:
            return DEFAULT_MAX_TOKENS
        if prompt_tokens >= context_tokens:  # vLLM refuses it before defaulting, with this message
            raise ApiError(
                400, f"This model's maximum context length is {context_tokens} tokens. However, you requested "
                f"{prompt_tokens} tokens in the messages, Please reduce the length of the messages.",
                param="messages")
        return context_tokens - prompt_tokens
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{name} must be an integer, got {value!r}.", param=name)
    if value < 1:
        raise ApiError(400, f"{name} must be at least 1, got {value}.", param=name)
    return value


def _int_field(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{name} must be an integer, got {value!r}.", param=name)
    return value


def _bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be a boolean, got {value!r}.", param=name)
    return value


def _stream_options(body: dict[str, Any], stream: bool) -> tuple[bool, bool]:
    options = body.get("stream_options")
    if options is None:
        return False, False
    if not stream:
        raise ApiError(400, "Stream options can only be defined when `stream=True`.", param="stream_options")
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object.", param="stream_options")
    return _bool_field(options, "include_usage"), _bool_field(options, "continuous_usage_stats")
