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
    gpus, errors = parse_nvidia_smi_csv(rows + "\n")
    assert errors == []
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
    gpus, errors = parse_rocm_smi_json(text)
    assert errors == []
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


# -- a driver, a GPU or a tool that answers only in part: keep what can be read ---------------------

H200_ROW = "0, NVIDIA H200, GPU-5f0c9a52-3d1e-4b7a-9c2e-0a1b2c3d4e5f, 143771, 550.54.15, 00000000:18:00.0, 9.0"
BANNER_550 = (
    "+-----------------------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"
    "+-----------------------------------------+------------------------+----------------------+\n"
)
NVIDIA_ONLY = {"which": lambda tool: "/usr/bin/nvidia-smi" if tool == "nvidia-smi" else None}


def nvidia_smi(query, banner=BANNER_550, calls=None):
    """A fake nvidia-smi: ``query(fields)`` answers --query-gpu (text, or an exception to raise)."""

    def run(argv):
        if calls is not None:
            calls.append(list(argv))
        if len(argv) == 1:
            answer = banner
        else:
            answer = query(argv[1].split("=", 1)[1].split(","))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return run


def failed(argv, rc, stdout="", stderr=""):
    return subprocess.CalledProcessError(rc, argv, output=stdout, stderr=stderr)


def test_an_old_driver_without_compute_cap_is_asked_again_without_it():
    calls = []

    def query(fields):
        if "compute_cap" in fields:  # driver 470: exit status 2, the field named in the message
            return failed(["nvidia-smi"], 2, stdout='Field "compute_cap" is not a valid field to query.\n\n')
        assert fields == ["index", "name", "uuid", "memory.total", "driver_version", "pci.bus_id"]
        return "0, NVIDIA A100-SXM4-80GB, GPU-1, 81920, 470.182.03, 00000000:07:00.0\n"

    inventory = gpu_inventory(run=nvidia_smi(query, calls=calls), **NVIDIA_ONLY)
    (gpu,) = inventory["gpus"]
    assert gpu["name"] == "NVIDIA A100-SXM4-80GB" and gpu["memory_total_mib"] == 81920
    assert gpu["compute_capability"] is None and gpu["pci_bus_id"] == "00000000:07:00.0"
    assert inventory["driver_version"] == "470.182.03" and inventory["cuda_version"] == "12.4"
    assert "error" not in inventory
    assert any("compute_cap" in note for note in inventory["notes"])
    assert sum(len(c) > 1 for c in calls) == 2  # asked once more, not in a loop


def test_a_rejected_field_the_message_does_not_name_drops_compute_cap():
    def query(fields):
        if "compute_cap" in fields:
            return failed(["nvidia-smi"], 2, stderr="Invalid combination of input arguments.\n")
        return H200_ROW.rsplit(",", 1)[0] + "\n"

    inventory = gpu_inventory(run=nvidia_smi(query), **NVIDIA_ONLY)
    assert [g["name"] for g in inventory["gpus"]] == ["NVIDIA H200"]
    assert inventory["gpus"][0]["compute_capability"] is None


def test_a_driver_that_cannot_be_reached_is_still_one_error_naming_why():
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    inventory = gpu_inventory(run=nvidia_smi(lambda fields: failed(["nvidia-smi"], 9, stdout=message)), **NVIDIA_ONLY)
    assert inventory["gpus"] == []
    assert inventory["error"].startswith("nvidia-smi failed:") and "couldn't communicate" in inventory["error"]


def test_one_bad_row_keeps_the_other_gpus_and_its_text():
    rows = "\n".join([
        H200_ROW,
        "1, [GPU requires reset], [GPU requires reset], [GPU requires reset], 550.54.15, 00000000:2A:00.0, 9.0",
        "Unable to determine the device handle for GPU0000:3A:00.0: Unknown Error",
        "x, NVIDIA H200, GPU-3, 143771, 550.54.15, 00000000:5D:00.0, 9.0",
        "4, NVIDIA H200, GPU-4, 143771, 550.54.15",
        H200_ROW.replace("0, ", "5, ", 1).replace("00000000:18", "00000000:9A"),
    ]) + "\n"
    inventory = gpu_inventory(run=nvidia_smi(lambda fields: rows), **NVIDIA_ONLY)
    assert [g["index"] for g in inventory["gpus"]] == [0, 1, 5]
    reset = inventory["gpus"][1]
    # the GPU is there (its index and bus id read); what it could not say is None, not the status text
    assert reset["name"] is None and reset["uuid"] is None and reset["memory_total_mib"] is None
    assert reset["pci_bus_id"] == "00000000:2A:00.0"
    texts = [e["row"] for e in inventory["row_errors"]]
    assert texts == [rows.splitlines()[i] for i in (1, 2, 3, 4)]
    assert all(e["why"] for e in inventory["row_errors"])
    assert inventory["driver_version"] == "550.54.15" and inventory["cuda_version"] == "12.4"


def test_gpus_printed_before_a_failing_exit_are_kept():
    # one GPU fallen off the bus: nvidia-smi prints the others, then exits non-zero
    stdout = H200_ROW + "\nUnable to determine the device handle for GPU0000:2A:00.0: Unknown Error\n"
    inventory = gpu_inventory(run=nvidia_smi(lambda fields: failed(["nvidia-smi"], 15, stdout=stdout)), **NVIDIA_ONLY)
    assert [g["uuid"] for g in inventory["gpus"]] == ["GPU-5f0c9a52-3d1e-4b7a-9c2e-0a1b2c3d4e5f"]
    assert [e["row"] for e in inventory["row_errors"]] == [stdout.splitlines()[1]]
    assert any("15" in note for note in inventory["notes"])


def test_a_failing_banner_keeps_the_gpus():
    for banner in (failed(["nvidia-smi"], 15, stdout="Unable to determine the device handle for GPU0: Unknown Error\n"),
                   subprocess.TimeoutExpired(["nvidia-smi"], 20), FileNotFoundError("nvidia-smi")):
        inventory = gpu_inventory(run=nvidia_smi(lambda fields: H200_ROW + "\n", banner=banner), **NVIDIA_ONLY)
        assert [g["name"] for g in inventory["gpus"]] == ["NVIDIA H200"] and "error" not in inventory
        assert inventory["cuda_version"] is None and inventory["driver_version"] == "550.54.15"
        assert any("CUDA version" in note for note in inventory["notes"]), inventory


def test_a_banner_printed_before_a_failing_exit_still_gives_the_cuda_version():
    banner = failed(["nvidia-smi"], 15, stdout=BANNER_550)
    inventory = gpu_inventory(run=nvidia_smi(lambda fields: H200_ROW + "\n", banner=banner), **NVIDIA_ONLY)
    assert inventory["cuda_version"] == "12.4"


def test_not_available_values_are_none_not_text():
    rows = ("0, [N/A], [Not Supported], 143771 MiB, N/A, [N/A], [Not Supported]\n"
            "1, NVIDIA H200, GPU-1, 143771.0, 550.54.15, 00000000:2A:00.0, 9.0\n")
    gpus, errors = parse_nvidia_smi_csv(rows)
    assert errors == []
    assert gpus[0] == {"index": 0, "name": None, "uuid": None, "memory_total_mib": 143771, "driver_version": None,
                       "pci_bus_id": None, "compute_capability": None}
    assert gpus[1]["memory_total_mib"] == 143771
    assert parse_cuda_version("| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: N/A |") is None
    assert parse_cuda_version("| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |") == "12.4"


def test_driver_version_is_the_first_gpu_that_has_one():
    rows = "0, NVIDIA H200, GPU-0, 143771, [N/A], 00000000:18:00.0, 9.0\n" + H200_ROW.replace("0, ", "1, ", 1) + "\n"
    inventory = gpu_inventory(run=nvidia_smi(lambda fields: rows), **NVIDIA_ONLY)
    assert inventory["driver_version"] == "550.54.15"


ROCM_ONLY = {"which": lambda tool: "/opt/rocm/bin/rocm-smi" if tool == "rocm-smi" else None}


def rocm(text):
    return lambda argv: text


def test_rocm_cards_with_missing_keys_or_odd_vram_keep_what_they_say():
    text = json.dumps({
        "card0": {"Card Series": "AMD Instinct MI300X", "VRAM Total Memory (B)": "206141652992"},
        "card1": {"Card Series": "AMD Instinct MI300X", "VRAM Total Memory (B)": "N/A"},
        "card2": {},
        "card3": "Not supported",
        "cardX": {"Card Series": "AMD Instinct MI300X"},
        "system": {"Driver version": "6.10.5"},
    })
    inventory = gpu_inventory(run=rocm(text), **ROCM_ONLY)
    assert [(g["index"], g["name"], g["memory_total_mib"]) for g in inventory["gpus"]] == [
        (0, "AMD Instinct MI300X", 196592), (1, "AMD Instinct MI300X", None), (2, None, None),
    ]
    assert inventory["gpus"][2]["sku"] is None and inventory["driver_version"] == "6.10.5"
    assert [e["row"] for e in inventory["row_errors"]] == ["card3", "cardX"]


def test_rocm_json_that_is_not_an_object_is_an_error_not_a_raise():
    for text in ("[1, 2]", '"card0"', "null", "{not json", json.dumps({"card0": {}, "system": "6.10.5"})):
        inventory = gpu_inventory(run=rocm(text), **ROCM_ONLY)
        assert inventory["vendor"] == "amd", text
        if text.startswith("{\""):
            assert [g["index"] for g in inventory["gpus"]] == [0] and inventory["driver_version"] is None
        else:
            assert inventory["gpus"] == [] and inventory["error"].startswith("rocm-smi failed:"), inventory


def test_rows_none_of_which_is_a_gpu_are_an_error_with_their_text():
    line = "Unable to determine the device handle for GPU0000:18:00.0: Unknown Error"
    inventory = gpu_inventory(run=nvidia_smi(lambda fields: line + "\n"), **NVIDIA_ONLY)
    assert inventory["gpus"] == [] and inventory["error"] == "nvidia-smi listed no readable GPU"
    assert [e["row"] for e in inventory["row_errors"]] == [line]
