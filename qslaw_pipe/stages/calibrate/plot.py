"""entropy.png (calibrate --method qvlm): each decoder layer's input entropy, coloured by the block it was
put in, and each block's reconstruction loss before and after its clipping was learned."""

from pathlib import Path


def plot_entropy(entropies: list[float], spans: list, losses: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    colours = ("tab:blue", "tab:orange")
    for b, (first, end) in enumerate(spans):
        layers = list(range(first, end))
        top.bar(layers, entropies[first:end], color=colours[b % 2], width=0.8)
        bottom.plot(layers, [losses[b]["loss_before"]] * len(layers), color="grey", linewidth=3, alpha=0.5)
        bottom.plot(layers, [losses[b]["loss_after"]] * len(layers), color=colours[b % 2], linewidth=3)
    top.set_ylabel("input entropy (nats)")
    top.set_title(
        f"qvlm partition: {len(spans)} blocks over {len(entropies)} layers (colours alternate by block)"
    )
    bottom.set_yscale("log")
    bottom.set_ylabel("block output MSE")
    bottom.set_xlabel("decoder layer")
    bottom.plot([], [], color="grey", linewidth=3, alpha=0.5, label="before (min-max clipping)")
    bottom.plot([], [], color="tab:blue", linewidth=3, label="after learned clipping")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
