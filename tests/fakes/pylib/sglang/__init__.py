"""A fake ``sglang`` package for tests: only ``python -m sglang.launch_server`` (see fake_servers.py)."""
