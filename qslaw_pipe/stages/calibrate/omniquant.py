"""OmniQuant initialisation of the LM's int-k weights (Shao et al., ICLR 2024).

Weight-only (W-bit, A16). Block by block: capture each decoder block's inputs from the already
quantized earlier blocks, train per-group clipping (kernels/lwc.py) with AdamW to minimise the MSE
between the full-precision block's output (on full-precision inputs) and the fake-quantized block's
output, then freeze.

Resume: after every block its qparams and both activation caches go to `resume/` in the partial
directory; an interrupted run continues at the first unfinished block and ends with the same tensors.
"""

from pathlib import Path

import torch
from torch.func import functional_call
from tqdm import tqdm

from qslaw_pipe.kernels.lwc import ClippedQuantizer
from qslaw_pipe.kernels.quant import fake_quant
from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors
from qslaw_pipe.stages.calibrate.batches import calibration_batches
from qslaw_pipe.stages.calibrate.capture import capture_block_inputs, run_block
from qslaw_pipe.stages.calibrate.config import CalibrateConfig, layer_group_size


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(a, b)


def _batched_loss(fn, q_in, fp_out, bs) -> float:
    with torch.no_grad():
        total = sum(
            _mse(fn(q_in[i : i + bs]), fp_out[i : i + bs]).item() * len(q_in[i : i + bs])
            for i in range(0, len(q_in), bs)
        )
    return total / len(q_in)


def calibrate_block(
    block, local_names: list[str], fp_in, q_in, kwargs, cfg: CalibrateConfig, index: int, bar: bool = True
):
    """Train clipping for the block's quantized Linears. Returns (qparams, fp_out, q_out, losses)."""
    linears = {n: block.get_submodule(n) for n in local_names}
    quantizers = {
        n: ClippedQuantizer(m.weight, cfg.bits, layer_group_size(cfg, m.in_features))
        for n, m in linears.items()
    }
    with torch.no_grad():
        fp_out = torch.cat(
            [
                run_block(block, fp_in[i : i + cfg.batch_size], kwargs)
                for i in range(0, len(fp_in), cfg.batch_size)
            ]
        )

    def q_forward(x, final=None):
        weights = {
            f"{n}.weight": (final[n] if final else quantizers[n](m.weight)) for n, m in linears.items()
        }
        return functional_call(block, weights, (x,), kwargs)

    before = _batched_loss(q_forward, q_in, fp_out, cfg.batch_size)
    params = [p for q in quantizers.values() for p in q.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + index)
    steps = range(cfg.epochs * ((len(q_in) + cfg.batch_size - 1) // cfg.batch_size))
    progress = tqdm(steps, desc=f"block {index:2d}", leave=False, disable=not bar)
    order = iter(())
    for _ in progress:
        idx = next(order, None)
        if idx is None:
            order = iter(torch.randperm(len(q_in), generator=gen).split(cfg.batch_size))
            idx = next(order)
        loss = _mse(q_forward(q_in[idx]), fp_out[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.set_postfix(loss=f"{loss.item():.3e}")
    qparams = {}
    with torch.no_grad():
        for n, q in quantizers.items():
            delta, zp = q.qparams(ste=False)
            qparams[n] = (
                delta.detach().clone(),
                zp.to(torch.uint8),
                q.upper.detach().clone(),
                q.lower.detach().clone(),
            )
        final = {
            n: fake_quant(linears[n].weight, d, z, cfg.bits, quantizers[n].group_size)
            for n, (d, z, _, _) in qparams.items()
        }
        after = _batched_loss(lambda x: q_forward(x, final), q_in, fp_out, cfg.batch_size)
        q_out = torch.cat(
            [q_forward(q_in[i : i + cfg.batch_size], final) for i in range(0, len(q_in), cfg.batch_size)]
        )
    return qparams, fp_out, q_out, {"block": index, "loss_before": before, "loss_after": after}


def omniquant(
    lm, targets: list[str], cfg: CalibrateConfig, text_path: Path, resume_dir: Path, bar: bool = True
):
    """Block-wise OmniQuant; returns ({layer: (delta, zp, upper, lower)}, per-block losses)."""
    layers = modules.decoder_layers(lm.model)
    prefix = modules.module_name(lm.model, layers)
    resume_dir.mkdir(exist_ok=True)
    state_path = resume_dir / "state.safetensors"
    torch.manual_seed(cfg.seed)
    batches = calibration_batches(lm, cfg, text_path)
    if state_path.is_file():
        _, kwargs = capture_block_inputs(lm.model, batches[:1])
        state, header = load_tensors(state_path)
        fp_in, q_in, start = state["fp_in"], state["q_in"], header["next_block"]
    else:
        fp_in, kwargs = capture_block_inputs(lm.model, batches)
        q_in, start = fp_in.clone(), 0
    results, losses = {}, []
    for i in range(len(layers)):
        block_file = resume_dir / f"block_{i:03d}.safetensors"
        local = [t[len(f"{prefix}.{i}.") :] for t in targets if t.startswith(f"{prefix}.{i}.")]
        if i < start:
            saved, header = load_tensors(block_file)
            losses.append(header["losses"])
        else:
            layers[i].requires_grad_(False)
            qp, fp_in, q_in, loss = calibrate_block(layers[i], local, fp_in, q_in, kwargs, cfg, i, bar)
            saved = {
                f"{n}.{k}": t
                for n, ts in qp.items()
                for k, t in zip(("delta", "zero_point", "lwc_upper", "lwc_lower"), ts, strict=True)
            }
            save_tensors(block_file, saved, {"losses": loss})
            save_tensors(state_path, {"fp_in": fp_in, "q_in": q_in}, {"next_block": i + 1})
            losses.append(loss)
        for n in local:
            results[f"{prefix}.{i}.{n}"] = tuple(
                saved[f"{n}.{k}"] for k in ("delta", "zero_point", "lwc_upper", "lwc_lower")
            )
    return results, losses
