"""raybench: a load generator for LLM inference servers, on Ray."""

__version__ = "0.1.0"
