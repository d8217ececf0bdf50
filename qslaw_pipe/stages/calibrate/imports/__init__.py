"""Quantized checkpoints of other tools read as our calibration (`calibrate --from-checkpoint DIR`): each
format's codes, steps and zero points, exactly, in our layout (codes uint8 [out, in]; delta fp32 and
zero_point uint8 [out, n_groups]; W = delta * (code - zp)).

formats.py             the formats' registry (one row each), chosen by config.json's quant_method
checkpoint.py          read_checkpoint(dir) -> Imported; the record types; names matched to the model's layers
gptq.py                GPTQ (auto-gptq, GPTQModel, optimum: v1 and v2 zero points)
awq.py                 AWQ's GEMM packing
auto_round.py          AutoRound's own `auto-round` method: its packing_format picks gptq.py's or awq.py's reader
compressed_tensors.py  compressed-tensors pack-quantized (llm-compressor's checkpoints, our own export)
"""
