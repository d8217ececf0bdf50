"""Stage `prepare`: the embedded default VLM, built offline from registry packages.

gguf_to_hf.py      SmolLM2's GGUF -> an fp32 Hugging Face causal LM
onnx_to_dinov2.py  DINOv2's ONNX -> transformers.Dinov2Model, checked against onnxruntime
assemble.py        LM + vision tower + fresh projector -> LlavaForConditionalGeneration + processor
stage.py           run(cfg) -> the cached model directory
command.py         `qslaw-pipe prepare`
"""

from qslaw_pipe.stages.prepare.command import command
from qslaw_pipe.stages.prepare.stage import PrepareConfig, run

__all__ = ["PrepareConfig", "command", "run"]
