"""The precision planner's part of the report (pipeline/analysis/report.py): the error along the depth of the
network per converted run (the `layer_errors` table), and the plan against the uniform precisions (plan.json)."""
from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from pipeline.analysis import plan as planmod

IMAGE = "layer_errors.png"


def sections(path: Path, layer_errors: pd.DataFrame, runs: pd.DataFrame, out: Path) -> list[tuple]:
    """(title, caption, image, table) of each section, as report.Section takes them; none without layer errors."""
    (out / IMAGE).unlink(missing_ok=True)
    if layer_errors.empty:
        return []
    found = [_depth_section(layer_errors, runs, out)]
    plan = planmod.read(path)
    if plan is not None:
        found.append(("Precision plan", plan["line"], None, _plan_table(plan)))
    return found


def _depth_section(layer_errors: pd.DataFrame, runs: pd.DataFrame, out: Path) -> tuple:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = dict(zip(runs["run_id"], runs["precision"].astype(str)))
    converted = layer_errors.groupby("run_id")["rel_err"].max()
    shown = [r for r in converted.index if converted[r] > 0]  # an fp32 run against itself draws nothing
    fig = Figure(figsize=(8, 4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    firsts = []
    for run_id in shown:
        rows = layer_errors[layer_errors["run_id"] == run_id].sort_values("depth")
        line, = ax.plot(rows["depth"], rows["rel_err"].clip(lower=1e-9), marker="o", ms=3,
                        label=names.get(run_id, run_id))
        first = rows[rows["first_over"].fillna(False).astype(bool)]
        if len(first):
            ax.scatter(first["depth"], first["rel_err"], s=90, facecolors="none", edgecolors=line.get_color())
            firsts.append(f"{names.get(run_id, run_id)}: {first['layer'].iloc[0]}")
    ax.set_yscale("log")
    ax.set_xlabel("depth (tensor index in the fp32 graph's order)")
    ax.set_ylabel("relative L2 error vs fp32")
    if shown:
        ax.legend(fontsize=8)
    fig.savefig(out / IMAGE)
    caption = ("Each intermediate tensor of a converted graph against the fp32 graph's on the same inputs, along the "
               "depth of the network; a circle marks the first layer past the threshold ("
               + ("; ".join(firsts) or "none passes it") + ").")
    return ("Error along the depth", caption, IMAGE, None)


def _plan_table(plan: dict) -> str:
    header = ["build", "keeps in high precision", "latency", "accuracy drop", "within the bound"]
    rows = []
    for o in plan["options"]:
        latency = f"{o['latency']:.4g} {o['unit']}" if o["latency"] is not None else ""
        drop = f"{o['kind']} {o['drop']:.4g}" if o["drop"] is not None else ""
        chosen = plan["plan"] is not None and o["run_id"] == plan["plan"]["run_id"]
        cells = [o["name"] + (" (the plan)" if chosen else ""), ", ".join(o["keep"]), latency, drop,
                 "yes" if o["feasible"] else f"no: {o['why'] or ''}"]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    ths = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f"<table><tr>{ths}</tr>\n" + "\n".join(rows) + "</table>"
