"""qslaw-pipe: quantization-aware scale learning (QSLAW) for LLaVA-style multimodal models."""

__version__ = "0.1.0"
