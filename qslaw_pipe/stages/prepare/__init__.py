"""Stage `prepare`: the embedded default VLM, built offline from registry packages.

gguf_to_hf.py      SmolLM2's GGUF -> an fp32 Hugging Face causal LM
onnx_to_dinov2.py  DINOv2's ONNX -> transformers.Dinov2Model, checked against onnxruntime
assemble.py        LM + vision tower + fresh projector -> LlavaForConditionalGeneration + processor
config.py          PrepareConfig
stage.py           run(cfg) -> the cached model directory
command.py         `qslaw-pipe prepare`
"""

from qslaw_pipe.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"command": "command", "PrepareConfig": "config", "run": "stage"})
__all__ = ["PrepareConfig", "command", "run"]
