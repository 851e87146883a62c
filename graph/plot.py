"""``plot.png`` of a run: validation WER and training loss per step with the actions marked, and the
hyperparameters per step. Matplotlib with the Agg backend; written to a temp file and renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sttrl.io import atomic_writer


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    # matplotlib: loaded when a plot is drawn, not when Studio imports the graph
    import matplotlib.pyplot as plt

    try:
        with atomic_writer(path) as fh:
            fig.savefig(fh, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


FAULT_COLOR = "#d62728"


def write_plot(path: str | Path, records: list[dict[str, Any]], start: dict[str, Any] | None = None) -> Path:
    """Draw ``records`` (trajectory records) into ``path`` atomically; ``start`` adds step 0 (WER, loss)."""
    # matplotlib: loaded when a plot is drawn, not when Studio imports the graph
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # after the backend is chosen
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    trained = [r for r in records if r.get("eval")]
    steps = ([0] if start else []) + [r["step"] for r in trained]
    wer = ([start["wer"]] if start else []) + [r["eval"]["wer"] for r in trained]
    loss_steps = ([0] if start and start.get("loss") is not None else []) + [
        r["step"] for r in trained if r["observation"].get("train_loss") is not None
    ]
    loss = ([start["loss"]] if start and start.get("loss") is not None else []) + [
        r["observation"]["train_loss"] for r in trained if r["observation"].get("train_loss") is not None
    ]

    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=[3, 2])
    ax1.plot(steps, wer, "o-", color="#1f77b4", label="validation WER")
    ax1.set_ylabel("validation WER", color="#1f77b4")
    ax2 = ax1.twinx()
    ax2.plot(loss_steps, loss, "s--", color="#ff7f0e", label="training loss (block mean)")
    ax2.set_ylabel("training loss", color="#ff7f0e")
    for r in records:
        faulty = r.get("status", "ok") != "ok"
        y = r["eval"]["wer"] if r.get("eval") else (wer[-1] if wer else 0.0)
        ax1.annotate(
            r["action"] + (f" ({r['status']})" if faulty else ""),
            (r["step"], y),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
            rotation=30,
            color=FAULT_COLOR if faulty else "black",
        )
        if faulty:
            ax1.plot([r["step"]], [y], "x", color=FAULT_COLOR, markersize=10)
    if start:
        ax1.annotate("start", (0, start["wer"]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    ax1.set_title(f"run {records[0]['run_id'] if records else ''}: WER and loss per step, actions marked", fontsize=10)
    ax1.grid(alpha=0.3)

    hp_steps = ([0] if records else []) + [r["step"] for r in records]
    hps = ([records[0]["hp_before"]] if records else []) + [r["hp_after"] for r in records]
    ax3.step(hp_steps, [h["lr"] for h in hps], where="post", color="#2ca02c", label="learning rate")
    ax3.set_yscale("log")
    ax3.set_ylabel("learning rate", color="#2ca02c")
    ax4 = ax3.twinx()
    ax4.step(hp_steps, [h["batch_size"] for h in hps], where="post", color="#9467bd", label="batch size")
    ax4.step(
        hp_steps,
        [h["freeze_layers"] for h in hps],
        where="post",
        color="#8c564b",
        linestyle=":",
        label="frozen encoder layers",
    )
    ax4.set_ylabel("batch size / frozen layers")
    handles = ax3.get_legend_handles_labels()[0] + ax4.get_legend_handles_labels()[0]
    ax4.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    ax3.set_xlabel("step (decision)")
    ax3.grid(alpha=0.3)
    ax3.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()

    return save_figure(fig, path)
