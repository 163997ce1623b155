"""``python -m sglang.launch_server``: the fake in ``tests/fakes/fake_servers.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fake_servers import main  # noqa: E402

if __name__ == "__main__":
    main("sglang", sys.argv[1:])
