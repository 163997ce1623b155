"""What accelerators a node has, read from the vendor tools, for a run's metadata (env.json).

Stdlib only: it runs on GPU nodes inside a Ray task, and on a laptop where there is no GPU
at all (then it says so instead of failing).

The inventory keeps whatever the tools could say. A value a tool could not give ("[N/A]",
"[Not Supported]", "[GPU requires reset]") is None, never its text; a row that is not a GPU,
or a GPU with an error status in some column, is kept as text in ``row_errors``
(``{"row": ..., "why": ...}``); what was read only in part (a field the driver does not know,
no CUDA version) is one line in ``notes``. ``error`` is set only when no GPU could be read.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

Runner = Callable[[Sequence[str]], str]

NVIDIA_FIELDS = ("index", "name", "uuid", "memory.total", "driver_version", "pci.bus_id", "compute_cap")
ROCM_ARGV = ("rocm-smi", "--showproductname", "--showdriverversion", "--showmeminfo", "vram", "--json")
_TIMEOUT_S = 20
# what nvidia-smi prints where a value does not apply: no value, not a fault
_ABSENT = {"", "n/a", "[n/a]", "not supported", "[not supported]"}
# nvidia-smi before 510 does not know compute_cap (exit status 2 and this line)
_REJECTED_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
_MEMORY_UNITS_MIB = {"b": 2**-20, "kib": 2**-10, "mib": 1, "gib": 2**10}

_FAILURES = (subprocess.SubprocessError, OSError, ValueError)


def _run(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=_TIMEOUT_S).stdout


def parse_nvidia_smi_csv(
    text: str, fields: Sequence[str] = NVIDIA_FIELDS,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The GPUs in ``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits``, and the
    rows that are not clean (``{"row": text, "why": ...}``); a field not in ``fields`` is None."""
    gpus, errors = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            gpu, faults = _nvidia_row(line, fields)
        except (ValueError, csv.Error) as err:
            errors.append({"row": line, "why": str(err)})
            continue
        gpus.append(gpu)
        if faults:  # a GPU in a bad state is still a GPU of the node: kept, and why it is partial
            errors.append({"row": line, "why": "; ".join(faults)})
    return gpus, errors


def _nvidia_row(line: str, fields: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    row = next(csv.reader([line], skipinitialspace=True), [])
    if len(row) != len(fields):
        raise ValueError(f"{len(row)} columns where {len(fields)} were asked for ({', '.join(fields)})")
    faults: list[str] = []
    values = {}
    for key, raw in zip(fields, row):
        values[key] = _value(raw)
        if values[key] is None and raw.strip().lower() not in _ABSENT:
            faults.append(f"{key}: {raw.strip()}")
    index = values.get("index")
    if index is None or not index.isdigit():
        raise ValueError(f"index {row[0].strip()!r} is not a GPU index")
    return {
        "index": int(index),
        "name": values.get("name"),
        "uuid": values.get("uuid"),
        "memory_total_mib": _mib_or_none(values.get("memory.total")),
        "driver_version": values.get("driver_version"),
        "pci_bus_id": values.get("pci.bus_id"),
        "compute_capability": values.get("compute_cap"),
    }, faults


def parse_cuda_version(text: str) -> str | None:
    """The 'CUDA Version' that plain ``nvidia-smi`` prints in its banner."""
    marker = "CUDA Version:"
    at = text.find(marker)
    if at < 0:
        return None
    words = text[at + len(marker) :].split()
    return _value(words[0].strip("|")) if words else None


def parse_rocm_smi_json(text: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Cards of ``rocm-smi --showproductname --showdriverversion --showmeminfo vram --json``, and
    the ``card*`` entries that are not a card; ValueError when the JSON is not an object."""
    data = json.loads(text)
    if not isinstance(data, dict):
        # ValueError, not TypeError: bad output of the tool, as bad JSON is, which gpu_inventory reports
        raise ValueError(f"rocm-smi printed JSON that is not an object: {text.strip()[:200]!r}")  # noqa: TRY004
    system = data.get("system")
    driver = _value(system.get("Driver version")) if isinstance(system, dict) else None
    gpus, errors = [], []
    for key in sorted(k for k in data if k.startswith("card")):
        card = data[key]
        if not key[4:].isdigit() or not isinstance(card, dict):
            errors.append({"row": key, "why": f"not a card: {json.dumps(card)[:200]}"})
            continue
        gpus.append(
            {
                "index": int(key[4:]),
                "name": _value(card.get("Card Series") or card.get("Card series") or card.get("Card model")),
                "sku": _value(card.get("Card SKU")),
                "memory_total_mib": _mib_or_none(card.get("VRAM Total Memory (B)"), unit="b"),
                "driver_version": driver,
            }
        )
    return gpus, errors


def gpu_inventory(run: Runner = _run, which: Callable[[str], str | None] = shutil.which) -> dict[str, Any]:
    """This node's GPUs: vendor, model, memory and driver, or why none could be read; never raises."""
    if which("nvidia-smi"):
        return _nvidia_inventory(run)
    if which("rocm-smi"):
        try:
            gpus, errors = parse_rocm_smi_json(run(ROCM_ARGV))
        except _FAILURES as err:
            return {"vendor": "amd", "gpus": [], "error": f"rocm-smi failed: {_why(err)}"}
        return _with_extras({"vendor": "amd", "gpus": gpus, "driver_version": _first_driver(gpus)}, errors, [])
    return {"vendor": None, "gpus": [], "error": "neither nvidia-smi nor rocm-smi is on PATH"}


def _nvidia_inventory(run: Runner) -> dict[str, Any]:
    notes: list[str] = []
    try:
        text, fields = _query_nvidia(run, notes)
        gpus, errors = parse_nvidia_smi_csv(text, fields)
    except _FAILURES as err:
        return {"vendor": "nvidia", "gpus": [], "error": f"nvidia-smi failed: {_why(err)}"}
    if not gpus and errors:  # rows came back, none of them a GPU: say so as an error, as before
        return _with_extras({"vendor": "nvidia", "gpus": [], "error": "nvidia-smi listed no readable GPU"},
                            errors, notes)
    inventory = {"vendor": "nvidia", "gpus": gpus, "driver_version": _first_driver(gpus),
                 "cuda_version": _cuda_version(run, notes)}
    return _with_extras(inventory, errors, notes)


def _query_nvidia(run: Runner, notes: list[str]) -> tuple[str, tuple[str, ...]]:
    """The --query-gpu output and the fields it holds; asked once more without the fields an
    older driver rejects. A failing exit that still printed GPU rows (one GPU fallen off the
    bus) keeps those rows."""
    try:
        return run(_nvidia_argv(NVIDIA_FIELDS)), NVIDIA_FIELDS
    except subprocess.CalledProcessError as err:
        output = _output(err)
        named = [f for f in _REJECTED_FIELD.findall(output) if f in NVIDIA_FIELDS and f != "index"]
        if not named and parse_nvidia_smi_csv(err.stdout or "")[0]:
            notes.append(f"nvidia-smi --query-gpu exited with status {err.returncode}; the GPUs it printed are kept")
            return err.stdout, NVIDIA_FIELDS
        rejected = named or ["compute_cap"]  # the field that newer drivers added: the likeliest cause
        fields = tuple(f for f in NVIDIA_FIELDS if f not in rejected)
        try:
            text = run(_nvidia_argv(fields))
        except _FAILURES:
            raise err from None  # the first answer says what is wrong; the guess did not help
        notes.append(f"this nvidia-smi does not answer {', '.join(rejected)} ({_why(err)}): recorded as None")
        return text, fields


def _cuda_version(run: Runner, notes: list[str]) -> str | None:
    """From plain nvidia-smi's banner, read from the output of a failing exit too where it has one."""
    try:
        text = run(["nvidia-smi"])
    except _FAILURES as err:
        text = _output(err) if isinstance(err, subprocess.CalledProcessError) else ""
        if parse_cuda_version(text) is None:
            notes.append(f"CUDA version unknown: plain nvidia-smi failed: {_why(err)}")
            return None
    return parse_cuda_version(text)


def _nvidia_argv(fields: Sequence[str]) -> list[str]:
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def _with_extras(inventory: dict[str, Any], errors: list[dict[str, str]], notes: list[str]) -> dict[str, Any]:
    """Only where there is something to say: a clean node's env.json stays as it was."""
    if errors:
        inventory["row_errors"] = errors
    if notes:
        inventory["notes"] = notes
    return inventory


def _first_driver(gpus: list[dict[str, Any]]) -> str | None:
    return next((g["driver_version"] for g in gpus if g["driver_version"]), None)


def _value(raw: object) -> str | None:
    """A tool's text value, or None where it says there is none or it could not read it."""
    if raw is None:
        return None
    text = str(raw).strip()
    if text.lower() in _ABSENT or (text.startswith("[") and text.endswith("]")) or text.lower() == "unknown error":
        return None
    return text


def _mib_or_none(raw: object, unit: str = "mib") -> int | None:
    """``143771``, ``143771.0`` or ``143771 MiB`` as MiB; bytes for rocm-smi (``unit="b"``)."""
    text = _value(raw)
    if text is None:
        return None
    number, _, suffix = text.partition(" ")
    scale = _MEMORY_UNITS_MIB.get((suffix.strip() or unit).lower())
    try:
        return int(float(number) * scale) if scale is not None else None
    except ValueError:
        return None


def _output(err: subprocess.CalledProcessError) -> str:
    return "\n".join(str(s) for s in (err.stdout, err.stderr) if s)


def _why(err: BaseException) -> str:
    """The tool's own first line where it printed one (CalledProcessError's own text has only the exit status)."""
    if isinstance(err, subprocess.CalledProcessError):
        first = next((line.strip() for line in _output(err).splitlines() if line.strip()), "")
        return f"exit status {err.returncode}" + (f": {first}" if first else "")
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":  # a quick look at a node: python -m raybench.store.hardware
    print(json.dumps(gpu_inventory(), indent=2))
