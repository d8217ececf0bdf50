"""What every stage shares; a module here serves more than one stage or exporter (tests/test_layout.py).

artifact.py     the run-directory contract: partial dir, manifest last, reuse / refuse / resume, upstream handed on
hashing.py      sha256 of files and directories (links followed within a model's tree)
lock.py         one writer per stage and run directory
tensors.py      safetensors with a typed, checksummed header
config.py       config dataclasses from flags and YAML recipes; identity_of
placement.py    --device / --dtype checked without torch
device.py       --device / --dtype resolved on the hardware
distributed.py  torchrun process groups, rank roles, what ranks agree on
sysinfo.py      library versions, peak RSS, the machine's name for tables
model.py        loading a model directory (any family, a fold artifact too)
modules.py      the decoder and its layers, the vision tower and projector (through arch/)
arch/           one adapter per model family
methods/        one implementation per tuning method, and their registry
targeting.py    which Linears are quantized: ordered name rules
qparams.py      the calibrate artifact as one typed record (Calibration)
tuned.py        the tune artifact's tensors
folded.py       the fold artifact: the canonical packed format every exporter reads
aligned.py      the shipped aligned projector and the base model's fingerprint
prompt.py       chat prompts in each family's own template
data/           samples: easy-VQA, ScienceQA, LLaVA JSON, captions, text
"""
