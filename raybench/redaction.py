"""Secrets kept out of everything raybench prints or writes: one helper, used by every message.

A URL may carry credentials (``http://user:password@host``, ``https://token@host``, or
``?api_key=...``); a run directory, a log or an error line gets pasted into issues, so every
such text goes through ``redact_text`` first. It imports nothing from raybench, so every room
(errors, progress, logs, run metadata) can use it.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"

# a name is secret when one of its words is one of these: --api-key, HF_TOKEN and
# OPENAI_API_KEY are; --tokenizer, --max-num-batched-tokens and TOKENIZERS_PARALLELISM are not
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials",
                           "authorization"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Za-z][a-z]*")
# the userinfo of a URL, with or without a password (a bare token before @ is a secret too)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s'\"]+@", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&#\s'\"]+)")


def is_secret_name(name: str) -> bool:
    """True for names such as ``--api-key``, ``HF_TOKEN``, ``hf_token``, ``X-Api-Key``."""
    words = {w.lower() for w in _WORDS.findall(name)}
    if {"token", "id"} <= words:  # --token-id-range: a token id is a vocabulary index, not a credential
        words -= {"token"}
    return bool(words & _SECRET_WORDS)


def redact_text(text: str) -> str:
    """Credentials in URLs (``https://user:pw@host``, ``?api_key=X``) replaced; the rest kept."""
    if "://" not in text and "=" not in text:  # the common case costs one scan
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _QUERY_PARAM.sub(lambda m: f"{m['lead']}{REDACTED}" if is_secret_name(m["name"]) else m[0], text)


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message of every record that passes, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
