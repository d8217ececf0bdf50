"""Q-VLM's entropy-guided block partition (Wang et al., NeurIPS 2024) on top of our block reconstruction.

Q-VLM's observation: layer-by-layer reconstruction ignores cross-layer dependency, and the entropy of a
layer's input activations is a cheap proxy for that dependency. So the decoder is cut into blocks of
consecutive layers that are reconstructed jointly (their quantizers trained together against the
full-precision output of the block's last layer): larger blocks capture more dependency and cost more search.

What we do (`calibrate --method qvlm`):
1. Entropy: the full-precision model runs the calibration set once; for every decoder layer its input
   hidden states x [B, L, H] give p = |x| / sum_L |x| per sequence and channel (a distribution over tokens),
   H(p) = -sum_L p log p, averaged over sequences and channels.
2. Partition: layer i > 0 starts a new block when its input entropy is at least the `entropy_quantile`
   quantile of all layers' entropies, or when the current block already holds `max_block` layers (the search
   budget); otherwise it joins the block before it. The blocks are a contiguous cover of the layers.
3. Reconstruction: OmniQuant's learnable weight clipping (kernels/lwc.py) per group, all Linears of a block
   trained jointly by AdamW on the block's output MSE (omniquant.py with spans); the artifact is the same int-k
   group format, so fold and export take it unchanged. `max_block 1` is exactly `--method omniquant`.

Where we follow the reference code (ChangyuanWang17/QVLM, quant_modules.py) and where we differ:
- It decides per layer whether to search anew (`last_layer_entropy >= 37` or every third layer) and otherwise
  shares the previous layer's search: the same cut rule as step 2, with its absolute threshold (37, tuned to
  LLaVA-13B activations) replaced by a quantile of this model's own entropies, and its block of 3 as the
  default `max_block`.
- Its entropy normalizes |x| over tokens with the L2 norm; we use the L1 norm, so p is a distribution and
  H(p) an entropy (the ranking of layers, which is all the partition uses, is what matters).
- Its search space is the activation quantizer's clipping range (a grid of 7 shrink factors scored by an
  L0.5 error); ours is weight clipping learned by gradient, since our deployable format is weight-only
  int-k. Learned rounding is not searched: the calibrate artifact holds delta and zero point only, and fold
  rounds to nearest.
- Its visual-encoder step searches the CLIP activations' clipping with a score that adds
  0.01 x (mean LLaMA entropy), a constant inside that search, so in the code it reduces to the L0.5
  range search. Our vision tower stays full precision (weight-only LM quantization), so there is no
  visual-encoder search here; `eval --act-bits` simulates activation quantization for the paper's W4A8-style
  settings.
"""

import json
from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline import distributed, modules
from qslaw_pipe.stages.calibrate.batches import calibration_batches
from qslaw_pipe.stages.calibrate.config import CalibrateConfig
from qslaw_pipe.stages.calibrate.omniquant import as_calibration, omniquant
from qslaw_pipe.stages.calibrate.plot import plot_entropy

PARTITION = "partition.json"


def token_entropy(x: torch.Tensor) -> float:
    """Mean over sequences and channels of the entropy of |x| as a distribution over tokens; x [B, L, H]."""
    a = x.detach().float().abs()
    p = a / a.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(dim=1).mean())


@torch.no_grad()
def layer_entropies(model, batches: list[dict]) -> list[float]:
    """The input entropy of every decoder layer on `batches` (the full-precision model), averaged over batches
    (and over the ranks under torchrun)."""
    layers = modules.decoder_layers(model)
    sums = [0.0] * len(layers)
    handles = []

    def hook(i):
        def record(_module, args, kw):
            sums[i] += token_entropy(args[0] if args else kw["hidden_states"])

        return record

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(hook(i), with_kwargs=True))
    try:
        for batch in batches:
            model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    n = distributed.sum_all([float(len(batches))])[0]
    return [s / n for s in distributed.sum_all(sums)]


def partition(entropies: list[float], max_block: int, quantile: float) -> list[tuple[int, int]]:
    """Contiguous blocks [(first, end), ...] covering every layer (see the module docstring, step 2)."""
    if not entropies:
        raise QslawError("the model has no decoder layers to partition", "check --model")
    threshold = float(torch.quantile(torch.tensor(entropies, dtype=torch.float64), quantile))
    spans, first = [], 0
    for i in range(1, len(entropies)):
        if entropies[i] >= threshold or i - first >= max_block:
            spans.append((first, i))
            first = i
    return [*spans, (first, len(entropies))]


def qvlm(
    lm, targets: list[str], cfg: CalibrateConfig, text_path: Path, resume_dir: Path, bar=True, compute=None
):
    """Entropies, partition, joint block reconstruction; returns (qparams, per-block losses, partition info).
    The partition is kept in `resume_dir` so a resumed run reconstructs the same blocks."""
    resume_dir.mkdir(exist_ok=True)
    saved = resume_dir / PARTITION
    batches = calibration_batches(lm, cfg, text_path)
    if saved.is_file():
        info = json.loads(saved.read_text())
    else:
        entropies = layer_entropies(lm.model, distributed.shard(batches))
        spans = partition(entropies, cfg.max_block, cfg.entropy_quantile)
        info = {
            "entropies": entropies,
            "spans": spans,
            "max_block": cfg.max_block,
            "quantile": cfg.entropy_quantile,
        }
        if distributed.is_main():
            saved.write_text(json.dumps(info))
    spans = [tuple(s) for s in info["spans"]]
    results, losses = omniquant(lm, targets, cfg, text_path, resume_dir, bar, compute, spans, batches)
    return results, losses, info


def calibrate(lm, targets, group_sizes, cfg, text_path, out, bar=True, compute=None):
    results, losses, info = qvlm(lm, targets, cfg, text_path, out / "resume", bar, compute)
    if distributed.is_main():
        plot_entropy(info["entropies"], info["spans"], losses, out / "entropy.png")
    record = as_calibration(results, group_sizes, cfg, "qvlm")
    return record, {"blocks": losses, "entropies": info["entropies"], "partition": info["spans"]}
