"""slm-advisor: pick a small language model for this host, then run it on vLLM."""

__version__ = "0.1.0"
