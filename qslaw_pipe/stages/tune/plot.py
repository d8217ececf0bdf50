"""loss.png: the tuning loss per modality against the step, warmup end marked."""

from pathlib import Path


def _smooth(values: list[float], k: int = 10) -> list[float]:
    return [
        sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1])
        for i in range(len(values))
    ]


def plot_losses(rows: list[dict], warmup_steps: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("loss_multimodal", "multimodal (answer tokens)"),
        ("loss_text", "WikiText (all tokens)"),
    ):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, alpha=0.25)
            ax.plot(steps, _smooth(list(values)), label=label, color=ax.lines[-1].get_color())
    if 0 < warmup_steps < len(rows):
        ax.axvline(warmup_steps, color="grey", linestyle="--", label=f"warmup ends (step {warmup_steps})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
