"""One redaction helper for every message: errors, progress lines (test_progress.py), logs and env.json."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.errors import BackendError, ConfigError, RunError
from raybench.redaction import RedactingFilter, redact_text


@pytest.mark.parametrize(("text", "expected"), [
    ("cannot reach http://user:pw@10.0.0.1:8000: refused", "cannot reach http://<redacted>@10.0.0.1:8000: refused"),
    ("https://ghp_token123@github.com/org/repo", "https://<redacted>@github.com/org/repo"),
    ("GET http://h:1/v1/models?api_key=sk-1&limit=2", "GET http://h:1/v1/models?api_key=<redacted>&limit=2"),
    ("http://h:1/x?token=abc#frag", "http://h:1/x?token=<redacted>#frag"),
    ("url='http://a:b@h' is not allowed", "url='http://<redacted>@h' is not allowed"),
    ("http://10.0.0.1:8000/v1/completions?max_tokens=5", "http://10.0.0.1:8000/v1/completions?max_tokens=5"),
    ("user@example.com wrote 3 cells", "user@example.com wrote 3 cells"),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize("cls", [ConfigError, BackendError, RunError])
def test_every_raybench_error_is_redacted_when_made(cls):
    assert str(cls("cannot reach http://user:secret@h:8000")) == "cannot reach http://<redacted>@h:8000"
    assert "secret" not in str(ConfigError.invalid("url", "ftp://user:secret@h", "an http:// URL"))


def test_a_bad_url_with_a_password_is_refused_without_echoing_it():
    result = CliRunner().invoke(main, ["bench", "--url", "ftp://user:secret@10.0.0.1:8000"])
    assert result.exit_code == 1
    assert "secret" not in result.output and "ftp://<redacted>@10.0.0.1:8000" in result.output


def test_log_records_pass_through_the_same_helper():
    record = logging.LogRecord("raybench.loadgen.pool", logging.WARNING, __file__, 1,
                               "server %s stopped answering", ("http://u:secret@h:1",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "server http://<redacted>@h:1 stopped answering"


def test_the_cli_routes_raybench_logs_through_the_redacting_handler():
    @main.command(name="_log_for_test", hidden=True)
    def _log_for_test() -> None:
        logging.getLogger("raybench.loadgen.pool").warning("lost http://u:secret@h:1")

    try:
        result = CliRunner().invoke(main, ["_log_for_test"])
    finally:
        main.commands.pop("_log_for_test")
    assert result.exit_code == 0, result.output
    assert result.output == "WARNING: lost http://<redacted>@h:1\n"
