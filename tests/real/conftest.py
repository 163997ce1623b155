"""Fixtures for the real-vLLM tests; they live in real_vllm.py (a name no other conftest shares)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from real_vllm import tiny_model, vllm_server, vllm_venv  # noqa: E402, F401  (fixtures)
