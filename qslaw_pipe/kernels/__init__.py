"""Tensors in, tensors out; imports nothing else of the package. Each fast path has a readable reference.

quant.py            group qparams, fake quant (STE), RTN, block layouts
qslaw.py            QSLAW's scaled fake quant (eq. 7-8) and its fused autograd function
lwc.py              OmniQuant's learnable weight clipping
rounding.py         SignRound's learnable rounding offsets and range scales, and the adjusted weights they export
pack.py             two int4 codes per byte
int4_reference.py   the readable reference of our onnxruntime int4 ops
isa.py              which CPU kernel path our library runs, and what CPU this is
build.py            `python -m qslaw_pipe.kernels.build`: the ai.qslaw custom-op library (csrc/)
"""
