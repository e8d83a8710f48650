"""The default run's held-out curve beside the earlier recipes' (issues #16 and #26), from the log.csv each wrote.

python benchmarks/plot_default_runs.py   # writes benchmarks/results/default_run/curves_vs_40ep.png
"""

from pathlib import Path

from matplotlib.figure import Figure

from mlp_mixer.analysis.plots import read_log, save_figure

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {  # folder: label
    "default_run_40ep": "40 epochs, batch 128, lr 5e-3, fp32 (issue 8)",
    "default_run_20ep_fp32": "20 epochs, batch 64, lr 3e-3, fp32, tanh GELU (issue 16)",
    "default_run_p4": "20 epochs, batch 32, lr 2e-3, bf16, erf GELU, 4x4-pixel patches (issue 26)",
    "default_run": "the same with 7x7-pixel patches (now)",
}


def main() -> Path:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for folder, label in RUNS.items():
        rows = read_log(RESULTS / folder / "log.csv")
        ax.plot([r["epoch"] for r in rows], [100 * r["val_top1"] for r in rows], label=label)
    ax.set(xlabel="epoch (4,000 digits each)", ylabel="held-out top-1 (%)", ylim=(90, 100), title="default run")
    ax.axhline(98.5, color="grey", lw=0.8, ls="--")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, RESULTS / "default_run" / "curves_vs_40ep.png")


if __name__ == "__main__":
    print(main())
