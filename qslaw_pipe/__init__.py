"""qslaw-pipe: quantization-aware scale learning (QSLAW) for LLaVA-style multimodal models.

cli.py         the `qslaw-pipe` command group (each command imported when it runs)
cli_common.py  Click plumbing: options from config fields, --config/--force/--json, one-line errors, --nproc
errors.py      QslawError: a one-line problem and its fix
paths.py       the cache directory ($QSLAW_CACHE), the default model's and text's places
lazy.py        package attributes imported on first use
registry.py    what every extension point's table shares (rows imported when used)
__main__.py    `python -m qslaw_pipe`
kernels/       tensors in, tensors out: qparams, fake quant, packing, our onnxruntime int4 ops
pipeline/      what every stage shares: artifacts, configs, models, families, methods, data
stages/        one stage each (prepare, calibrate, tune, fold, export, evaluate) and the main job
exports/       the fold artifact to each deployment target
"""

__version__ = "0.1.0"
