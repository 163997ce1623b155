import json
import subprocess
from pathlib import Path

from raybench.store.hardware import gpu_inventory, parse_cuda_version, parse_nvidia_smi_csv, parse_rocm_smi_json

DATA = Path(__file__).parent / "data"


def fake_tools(outputs: dict[str, str]):
    def run(argv):
        key = " ".join(argv[:2]) if len(argv) > 1 else argv[0]
        for prefix, text in outputs.items():
            if key.startswith(prefix):
                return text
        raise subprocess.CalledProcessError(1, argv)

    return run


def test_real_h200_node():
    """Output recorded on a one-GPU H200 machine (driver 580.159.04)."""
    inventory = gpu_inventory(
        run=fake_tools({
            "nvidia-smi --query-gpu": (DATA / "nvidia_smi_query_h200.csv").read_text(),
            "nvidia-smi": (DATA / "nvidia_smi_h200.txt").read_text(),
        }),
        which=lambda tool: f"/usr/bin/{tool}" if tool == "nvidia-smi" else None,
    )
    assert inventory == {
        "vendor": "nvidia",
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H200",
                "uuid": "GPU-fd167ec1-8ac7-2575-4a1d-7c0856c1ef6b",
                "memory_total_mib": 143771,
                "driver_version": "580.159.04",
                "pci_bus_id": "00000000:00:06.0",
                "compute_capability": "9.0",
            }
        ],
        "driver_version": "580.159.04",
        "cuda_version": "13.0",
    }


def test_eight_gpus_and_not_available_fields():
    rows = "\n".join(f"{i}, NVIDIA H200, GPU-{i}, [N/A], 570.86.15, 00000000:{i:02X}:00.0, 9.0" for i in range(8))
    gpus = parse_nvidia_smi_csv(rows + "\n")
    assert [g["index"] for g in gpus] == list(range(8))
    assert all(g["memory_total_mib"] is None and g["driver_version"] == "570.86.15" for g in gpus)


def test_cuda_version_missing_from_banner():
    assert parse_cuda_version("NVIDIA-SMI 470.1  Driver Version: 470.1") is None


def test_rocm_smi_cards():
    text = json.dumps({
        "card0": {"Card Series": "AMD Instinct MI300X", "Card SKU": "M3000100", "VRAM Total Memory (B)": "206141652992"},
        "card1": {"Card Series": "AMD Instinct MI300X", "Card SKU": "M3000100", "VRAM Total Memory (B)": "206141652992"},
        "system": {"Driver version": "6.10.5"},
    })
    gpus = parse_rocm_smi_json(text)
    assert [(g["index"], g["name"], g["memory_total_mib"], g["driver_version"]) for g in gpus] == [
        (0, "AMD Instinct MI300X", 196592, "6.10.5"),
        (1, "AMD Instinct MI300X", 196592, "6.10.5"),
    ]


def test_no_gpu_tools_is_said_not_raised():
    assert gpu_inventory(run=fake_tools({}), which=lambda tool: None) == {
        "vendor": None, "gpus": [], "error": "neither nvidia-smi nor rocm-smi is on PATH",
    }


def test_a_failing_tool_is_reported():
    inventory = gpu_inventory(run=fake_tools({}), which=lambda tool: "/usr/bin/nvidia-smi")
    assert inventory["vendor"] == "nvidia" and inventory["gpus"] == []
    assert inventory["error"].startswith("nvidia-smi failed:")
