"""What accelerators a node has, read from the vendor tools, for a run's metadata (env.json).

Stdlib only: it runs on GPU nodes inside a Ray task, and on a laptop where there is no GPU
at all (then it says so instead of failing).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

Runner = Callable[[Sequence[str]], str]

NVIDIA_FIELDS = ("index", "name", "uuid", "memory.total", "driver_version", "pci.bus_id", "compute_cap")
_TIMEOUT_S = 20


def _run(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=_TIMEOUT_S).stdout


def parse_nvidia_smi_csv(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=<NVIDIA_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row:
            continue
        values = dict(zip(NVIDIA_FIELDS, (v.strip() for v in row)))
        gpus.append(
            {
                "index": int(values["index"]),
                "name": values["name"],
                "uuid": values["uuid"],
                "memory_total_mib": _int_or_none(values.get("memory.total")),
                "driver_version": values.get("driver_version"),
                "pci_bus_id": values.get("pci.bus_id"),
                "compute_capability": values.get("compute_cap"),
            }
        )
    return gpus


def parse_cuda_version(text: str) -> str | None:
    """The 'CUDA Version' that plain ``nvidia-smi`` prints in its banner."""
    marker = "CUDA Version:"
    at = text.find(marker)
    if at < 0:
        return None
    return text[at + len(marker) :].split()[0].strip("|") or None


def parse_rocm_smi_json(text: str) -> list[dict[str, Any]]:
    """Cards of ``rocm-smi --showproductname --showdriverversion --showmeminfo vram --json``."""
    data = json.loads(text)
    driver = (data.get("system") or {}).get("Driver version")
    gpus = []
    for key in sorted(k for k in data if k.startswith("card")):
        card = data[key]
        total = card.get("VRAM Total Memory (B)")
        gpus.append(
            {
                "index": int(key[4:]),
                "name": card.get("Card Series") or card.get("Card series") or card.get("Card model"),
                "sku": card.get("Card SKU"),
                "memory_total_mib": int(total) // 2**20 if total else None,
                "driver_version": driver,
            }
        )
    return gpus


def gpu_inventory(run: Runner = _run, which: Callable[[str], str | None] = shutil.which) -> dict[str, Any]:
    """This node's GPUs: vendor, model, memory and driver, or why none could be read."""
    if which("nvidia-smi"):
        try:
            gpus = parse_nvidia_smi_csv(
                run(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_FIELDS)}", "--format=csv,noheader,nounits"])
            )
            return {
                "vendor": "nvidia",
                "gpus": gpus,
                "driver_version": gpus[0]["driver_version"] if gpus else None,
                "cuda_version": parse_cuda_version(run(["nvidia-smi"])),
            }
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
            return {"vendor": "nvidia", "gpus": [], "error": f"nvidia-smi failed: {err}"}
    if which("rocm-smi"):
        try:
            gpus = parse_rocm_smi_json(
                run(["rocm-smi", "--showproductname", "--showdriverversion", "--showmeminfo", "vram", "--json"])
            )
            return {"vendor": "amd", "gpus": gpus, "driver_version": gpus[0]["driver_version"] if gpus else None}
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
            return {"vendor": "amd", "gpus": [], "error": f"rocm-smi failed: {err}"}
    return {"vendor": None, "gpus": [], "error": "neither nvidia-smi nor rocm-smi is on PATH"}


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(float(text)) if text not in (None, "", "[N/A]") else None
    except ValueError:
        return None


if __name__ == "__main__":  # a quick look at a node: python -m raybench.store.hardware
    print(json.dumps(gpu_inventory(), indent=2))
