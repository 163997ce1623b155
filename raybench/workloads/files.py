"""Reading dataset files as a stream of records, with errors that name the first bad line.

A ShareGPT file is one JSON array (hundreds of MB for the full dataset); it is decoded one
element at a time from a buffer, so the driver never holds the whole file, and no actor reads
it at all (workloads send each actor only its requests' records).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from raybench.errors import ConfigError

_CHUNK_BYTES = 1 << 18
# a token cut by the buffer's end fails at its own start: "tru" (true), "1.5e", "\\u12"; none is longer
_LAST_TOKEN_CHARS = 8
_DECODER = json.JSONDecoder()


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} file {path} is a directory: give the file itself")
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    return path


def iter_jsonl(path: Path, example: str) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` of every non-blank line; a line that is not JSON stops with its number."""
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise ConfigError(f"{path}:{line_no}: not JSON ({err}); expected one record a line, e.g. {example}") from None


def iter_json_array(path: Path, example: str) -> Iterator[tuple[int, Any]]:
    """``(line number, element)`` of a file holding one JSON array, decoded element by element.

    The file must be UTF-8 (a leading byte order mark is skipped); other bytes stop the read
    with their position, as custom and trace files do, rather than becoming U+FFFD in a prompt.
    """
    with path.open("rb") as f:
        reader = _ArrayReader(f, path, example)
        yield from reader.elements()


class _ArrayReader:
    """A JSON array read from a byte stream in chunks; tracks the line each element starts on."""

    def __init__(self, stream: Any, path: Path, example: str) -> None:
        self._stream, self._path, self._example = stream, path, example
        self._buf, self._pos, self._line, self._eof = "", 0, 1, False
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._bytes_read, self._lines_read = 0, 0  # for where a byte that is not UTF-8 sits
        self._first_text = True  # no character decoded yet (where a byte order mark may be)

    def elements(self) -> Iterator[tuple[int, Any]]:
        if self._next_char() != "[":
            raise self._error("expected a JSON array of records")
        self._pos += 1
        if self._next_char() == "]":
            return
        while True:
            self._next_char()  # raw_decode takes no leading space
            line = self._line
            yield line, self._decode()
            sep = self._next_char()
            self._pos += 1
            if sep == "]":
                return
            if sep != ",":
                raise self._error(f"expected ',' or ']' after the element that starts on line {line}")

    def _decode(self) -> Any:
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as err:
                if not self._eof and _runs_off(err, len(self._buf)):
                    self._fill()  # the element runs past the buffer: read on and try again
                    continue
                # a mistake inside the buffer: more of the file would not mend it, so stop here
                # rather than read (and hold) the rest of a file of hundreds of MB
                self._line += self._buf.count("\n", self._pos, err.pos)
                raise self._error(f"not JSON ({err.msg})") from None
            if end == len(self._buf) and not self._eof:
                self._fill()  # a number at the buffer's end may go on
                continue
            self._line += self._buf.count("\n", self._pos, end)
            self._pos = end
            return value

    def _next_char(self) -> str:
        """The next non-space character (not consumed); '' at the end of the file."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                if self._buf[self._pos] == "\n":
                    self._line += 1
                self._pos += 1
            if self._pos < len(self._buf) or self._eof:
                return self._buf[self._pos] if self._pos < len(self._buf) else ""
            self._fill()

    def _fill(self) -> None:
        # at least as much as is still unread: an element that runs on doubles the buffer each
        # time, so a long one is copied a bounded number of times over, not once per chunk
        raw = self._stream.read(max(_CHUNK_BYTES, len(self._buf) - self._pos))
        seen = self._utf8.getstate()[0] + raw  # with the bytes of a character the last read split
        try:
            chunk = self._utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as err:
            where = self._bytes_read + len(raw) - len(seen) + err.start
            line = self._lines_read + seen[: err.start].count(b"\n") + 1
            raise ConfigError(f"{self._path}:{line}: byte {where} (0x{seen[err.start]:02x}) is not UTF-8 ({err.reason}); "
                              "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        if self._first_text and chunk:
            self._first_text = False
            chunk = chunk.removeprefix("\ufeff")  # a byte order mark, as some editors write: not JSON
        self._bytes_read += len(raw)
        self._lines_read += raw.count(b"\n")
        self._buf = self._buf[self._pos:] + chunk
        self._pos = 0
        self._eof = not raw

    def _error(self, what: str) -> ConfigError:
        return ConfigError(f"{self._path}:{self._line}: {what}; expected e.g. {self._example}")


def _runs_off(err: json.JSONDecodeError, size: int) -> bool:
    """Whether a decode error may only mean the element goes on past the buffer's end: a string
    still open (its error points at its start), or an error within the last token's reach."""
    return err.msg.startswith("Unterminated string") or err.pos >= size - _LAST_TOKEN_CHARS
