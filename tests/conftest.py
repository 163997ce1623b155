import os

# Ray decides at import time whether nodes may bind a routable address: every Ray process
# started by the tests listens on 127.0.0.1 only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)
# Tests never use the network: a Hugging Face name resolves from the local cache or not at all
# (a model's default tokenizer then falls back to the token-id range, as offline in CI).
os.environ["HF_HUB_OFFLINE"] = "1"
