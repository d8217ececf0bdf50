"""AutoRound's own format (`quant_method: auto-round`): its packing_format names the layout. auto_round:auto_awq
is AWQ's GEMM packing; auto_round:auto_gptq is GPTQ's v1 (zero points stored minus 1); the others
(auto_round, auto_round:exllamav2, auto_round:gptqmodel) are GPTQ's layout with the zero points as they are.
Checkpoints whose extra_config gives some layers other bits are refused."""

from qslaw_pipe.errors import QslawError
from qslaw_pipe.stages.calibrate.imports import awq, gptq
from qslaw_pipe.stages.calibrate.imports.checkpoint import Imported


def read(tensors: dict, qconfig: dict) -> Imported:
    packing = str(qconfig.get("packing_format", "auto_round:auto_gptq")).lower()
    bits = int(qconfig["bits"])
    mixed = sorted(
        n
        for n, c in (qconfig.get("extra_config") or {}).items()
        if int(c.get("bits", bits)) < 16 and int(c.get("bits", bits)) != bits
    )
    if mixed:
        raise QslawError(
            f"the AutoRound checkpoint quantizes {mixed[0]} (and {len(mixed) - 1} more) at other bits than {bits}",
            "import a checkpoint with one bit width for every layer",
        )
    if "awq" in packing:
        return awq.read_packed(tensors, qconfig, "auto-round")
    if packing.startswith("auto_round") and "auto_gptq" in packing:
        return gptq.read_packed(tensors, qconfig, "auto-round", 1)
    return gptq.read_packed(tensors, qconfig, "auto-round", 0)
