"""Text-only causal LMs (Llama, Qwen2, Mistral, ...: whatever AutoModelForCausalLM builds): no vision
tower or projector; tune learns the scales on text alone (`tune --data text`)."""

from qslaw_pipe.pipeline.arch.base import Arch

ARCH = Arch(name="causal LM", model_types=(), automodel="AutoModelForCausalLM")
