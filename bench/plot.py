"""The benchmark's figures: ``bench.png`` (validation WER over the training budget per controller),
``bench-paired.png`` (per-instance difference of hidden WER against the reference, with the bootstrap CI) and
``bench-actions.png`` (the action raster: controller x instance x block).
Matplotlib with the Agg backend; written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.results import pairing_key
from graph.plot import pyplot, save_figure
from sttrl.control import registry as registry
from sttrl.env.actions import ALL_ACTIONS

MARKERS = ("s--", "^:", "o-", "D-.", "v-", "P-", "X--", "*:")  # tell overlapping lines apart


def _colors(names: list[str]) -> dict[str, str]:
    registry.names()  # loads the built-in controllers first
    return dict(registry.colors(names))


def _style(c: str, order: list[str]) -> str:
    return MARKERS[order.index(c) % len(MARKERS)]


def write_bench_plot(path: Path, summary: dict[str, Any], title: str, unit: str = "steps") -> Path:
    """``bench.png``: validation WER (log axis) over the training ``unit`` spent (steps or samples), mean line
    and min-max band per controller; searches (best so far over trials) in a panel of their own beside the
    controllers whose curve follows one model from the start (episodes, lookahead)."""
    plt = pyplot()

    names = list(summary)
    colors = _colors(names)
    # a curve from the starting model (x = 0) follows one model; a search's starts after its first trial
    kinds = {c: "episode" if s["curve"]["x"][:1] == [0] else "trials" for c, s in summary.items()}
    panels = [k for k in ("episode", "trials") if k in kinds.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], panels, strict=True):
        for c, s in summary.items():
            if kinds[c] != kind:
                continue
            cv = s["curve"]
            ax.plot(cv["x"], cv["mean"], _style(c, names), ms=4, color=colors[c], label=f"{c} (n={s['runs']})")
            ax.fill_between(cv["x"], cv["min"], cv["max"], color=colors[c], alpha=0.15, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel(f"training {unit} spent")
        ax.set_title(
            "episodes: the current model after each block"
            if kind == "episode"
            else "searches: best validation WER so far",
            fontsize=9,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, title="line: mean over instances; band: min-max", title_fontsize=8)
    axes[0][0].set_ylabel("validation WER (log)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_paired_plot(path: Path, paired: dict[str, Any], title: str) -> Path | None:
    """``bench-paired.png``: per instance, hidden WER minus the reference's (dots; with replicates the mean of the
    instance's paired differences), the mean difference and its bootstrap 95 % CI (bar) per controller; left of
    zero is better. None when nothing is paired."""
    per = {c: s for c, s in paired.get("controllers", {}).items() if s.get("n_pairs")}
    if not per:
        return None
    plt = pyplot()

    ref = paired["reference"]
    colors = _colors(list(per))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(per)))
    for i, (c, s) in enumerate(per.items()):
        diffs = list(s.get("diffs", {}).values())
        ax.scatter(diffs, [i] * len(diffs), color=colors[c], alpha=0.7, s=22, zorder=3)
        lo, hi = s["ci95"]
        ax.errorbar(
            [s["diff_mean"]],
            [i + 0.25],
            xerr=[[s["diff_mean"] - lo], [hi - s["diff_mean"]]],
            fmt="D",
            color="black",
            ms=4,
            capsize=3,
            zorder=4,
        )
    ax.axvline(0, color="#555555", lw=1)
    ax.set_yticks(range(len(per)), list(per))
    ax.set_ylim(-0.6, len(per) - 0.2)
    ax.set_xlabel(f"Δ hidden WER vs {ref} (dots: instances; diamond: mean with bootstrap 95 % CI; < 0 is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path)


def write_action_raster(path: Path, runs: list[dict[str, Any]], title: str) -> Path | None:
    """``bench-actions.png``: the action each episode controller took at each block, one row per
    (controller, instance), grouped by controller; a blank cell is a block not trained (stopped early).
    Controllers that run their own trials have no per-block actions and are left out. None when no run has
    actions."""
    rows = [r for r in runs if r.get("status") == "finished" and r.get("actions")]
    if not rows:
        return None
    plt = pyplot()
    from matplotlib.colors import ListedColormap  # matplotlib is optional (the graph extra); pyplot() checked it
    from matplotlib.patches import Patch

    order = list(dict.fromkeys(r["controller"] for r in rows))
    rows.sort(key=lambda r: (order.index(r["controller"]), pairing_key(r), r.get("replicate", 0)))
    width = max(len(r["actions"]) for r in rows)
    names = list(ALL_ACTIONS)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        for j, a in enumerate(r["actions"]):
            grid[i, j] = names.index(a) if a in names else np.nan
    palette = [
        "#c7c7c7",
        "#d62728",
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#9467bd",
        "#8c564b",
        "#000000",
        "#e377c2",
        "#17becf",
    ]
    cmap = ListedColormap(palette[: len(names)]).with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.45 * width), 1.4 + 0.28 * len(rows)))
    ax.imshow(
        np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto", interpolation="nearest"
    )
    labels = [
        f"{r['controller']} · {pairing_key(r)}" + (f" r{r['replicate']}" if r.get("replicate") else "") for r in rows
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xticks(range(width), [str(j + 1) for j in range(width)], fontsize=7)
    for i in range(1, len(rows)):
        if rows[i]["controller"] != rows[i - 1]["controller"]:
            ax.axhline(i - 0.5, color="black", lw=1)
    ax.set_xlabel("block (decision)")
    ax.set_title(title, fontsize=10)
    used = sorted({int(v) for v in grid[~np.isnan(grid)]})
    ax.legend(
        handles=[Patch(color=palette[k], label=names[k]) for k in used],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="action",
        title_fontsize=7,
    )
    fig.tight_layout()
    return save_figure(fig, path)
