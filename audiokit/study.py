"""Activation studies: fine-tune one configuration once per (head activation, seed) and compare the results.

:func:`compare_activations` runs every cell into ``<output_dir>/runs/<activation>_seed<seed>/`` (a finished cell is
reused, a partial one resumed) and writes ``results.csv``, ``results.md``, ``curves.png``, ``bars.png``,
``study.json`` and a ``README.md`` that names the winner and says honestly whether its lead exceeds the spread over
seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ._fileio import atomic_write, to_json
from .train.config import RunConfig, check_output_directory
from .train.loop import finetune

DEFAULT_HIDDEN = [256]
_LAYER_KEY = re.compile(r"^(?P<prefix>.+)\.layer(?P<index>\d+)\.(?P<stat>[A-Za-z0-9_]+)$")


# -- small helpers ----------------------------------------------------------------------------------------------------
def cell_name(activation: str, seed: int) -> str:
    """Directory name of one cell; characters such as ``:`` in ``leaky_relu:0.1`` become ``_``."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', activation)}_seed{seed}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is nan for fewer than two values."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def layer_diagnostics(record: dict[str, Any]) -> dict[str, float]:
    """``{prefix}.layer{i}.{stat}`` keys of one epoch record averaged over the hidden layers: ``{prefix}.{stat}``."""
    groups: dict[str, list[float]] = {}
    for key, value in record.items():
        m = _LAYER_KEY.match(key)
        if m and isinstance(value, (int, float)) and not isinstance(value, bool):
            groups.setdefault(f"{m['prefix']}.{m['stat']}", []).append(float(value))
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def _fmt(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and math.isfinite(std) else "")


# -- running the cells ------------------------------------------------------------------------------------------------
def _cell_config(config: Path, overrides: list[str], activation: str, seed: int, hidden: list[int] | None
                 ) -> RunConfig:  # fmt: skip
    items = [*overrides, f"head.activation={activation}", f"train.seed={seed}"]
    if hidden is not None:
        items.append(f"head.hidden={json.dumps(list(hidden))}")
    return RunConfig.from_yaml(config, items)


def _check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    """A cell run with another configuration must not be silently reused."""
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        return
    old = yaml.safe_load(stored.read_text()) or {}
    new = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if old != new:
        diff = sorted(_diff_keys(old, new))
        raise ValueError(
            f"{run_dir} was run with a different configuration (differs in {diff}); "
            "use another output directory or delete that cell"
        )


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _number(value: Any) -> float:
    """A metric read back from JSON: run files write an undefined value (NaN) as null."""
    return float("nan") if value is None else float(value)


def _load_cell(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Per-split histories and the cell's scalars: final / best metric, final val loss, train seconds, diagnostics."""
    metric = summary["metric"]
    histories = {split: _read_jsonl(run_dir / split / "metrics.jsonl") for split in summary["splits"]}
    lasts = [h[-1] for h in histories.values() if h]
    diagnostics: dict[str, list[float]] = {}
    for last in lasts:
        for k, v in layer_diagnostics(last).items():
            diagnostics.setdefault(k, []).append(v)
    return {
        "metric": metric,
        "final": _number(summary["final"]["mean"]),
        "best": _number(summary["best_epoch"]["mean"]),
        "final_val_loss": float(np.mean([_number(r.get("val_loss")) for r in lasts])) if lasts else float("nan"),
        # total training time of the cell (all epochs, all splits); excludes validation
        "train_seconds": float(sum(r.get("train_seconds") or 0.0 for h in histories.values() for r in h)),
        "diagnostics": {k: float(np.mean(v)) for k, v in diagnostics.items()},
        "histories": histories,
    }


def _epoch_curves(cells: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Mean of ``key`` per epoch over every split of every cell that reached that epoch."""
    per_epoch: dict[int, list[float]] = {}
    for cell in cells:
        for history in cell["histories"].values():
            for record in history:
                if key in record and record[key] is not None:
                    per_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
    epochs = sorted(per_epoch)
    return epochs, [float(np.mean(per_epoch[e])) for e in epochs]


# -- the study --------------------------------------------------------------------------------------------------------
def compare_activations(
    config: str | Path,
    activations: list[str],
    seeds: list[int],
    output_dir: str | Path,
    *,
    overrides: list[str] | None = None,
    hidden: list[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``config`` once per (activation, seed) and compare the head activations.

    Each cell loads ``config`` with ``overrides`` plus ``head.activation=<act>``, ``train.seed=<seed>`` and, when
    given, ``head.hidden=<hidden>``. If the configured head has no hidden layer and ``hidden`` is None, ``[256]`` is
    used (the activation would otherwise not exist) and the table records ``hidden_defaulted``. Cells with a
    ``summary.json`` are reused, partial ones resumed. Returns the table written to ``results.csv`` / ``study.json``.
    """
    config = Path(config)
    output_dir = Path(output_dir)
    overrides = list(overrides or [])
    activations = list(dict.fromkeys(activations))
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not activations or not seeds:
        raise ValueError("compare_activations needs at least one activation and one seed")
    names = [cell_name(a, 0) for a in activations]
    if len(set(names)) != len(names):
        raise ValueError(f"activations {activations} map to the same directory names")

    base = RunConfig.from_yaml(config, overrides)
    hidden_defaulted = False
    if hidden is None and not base.head.hidden:
        hidden, hidden_defaulted = list(DEFAULT_HIDDEN), True
    # Resolve (and validate) every cell's configuration before any training starts.
    configs = {(a, s): _cell_config(config, overrides, a, s, hidden).validate() for a in activations for s in seeds}
    check_output_directory(output_dir, "study directory")

    cells: dict[str, dict[str, Any]] = {}
    for (activation, seed), cfg in configs.items():
        name = cell_name(activation, seed)
        run_dir = output_dir / "runs" / name
        summary_path = run_dir / "summary.json"
        _check_same_config(run_dir, cfg)
        if summary_path.is_file():
            status = "reused"
            summary = json.loads(summary_path.read_text())
        else:
            status = "resumed" if run_dir.exists() else "trained"
            if progress:
                print(f"[study] {name}: {'resuming' if run_dir.exists() else 'training'}", file=sys.stderr)
            finetune(cfg, run_dir, resume=run_dir.exists(), progress=progress)
            summary = json.loads(summary_path.read_text())
        cell = _load_cell(run_dir, summary)
        cells[name] = {"activation": activation, "seed": seed, "run_dir": str(run_dir), "status": status, **cell}

    metrics = {c["metric"] for c in cells.values()}
    if len(metrics) != 1:
        raise ValueError(f"cells report different metrics {sorted(metrics)}")
    metric = metrics.pop()

    rows = []
    for activation in activations:
        group = [c for c in cells.values() if c["activation"] == activation]
        final_mean, final_std = _mean_std([c["final"] for c in group])
        best_mean, best_std = _mean_std([c["best"] for c in group])
        loss_mean, loss_std = _mean_std([c["final_val_loss"] for c in group])
        secs_mean, _ = _mean_std([c["train_seconds"] for c in group])
        row: dict[str, Any] = {
            "activation": activation,
            "seeds": len(group),
            f"final_{metric}_mean": final_mean,
            f"final_{metric}_std": final_std,
            f"best_epoch_{metric}_mean": best_mean,  # optimistic: epoch chosen on the evaluation split
            f"best_epoch_{metric}_std": best_std,
            "final_val_loss_mean": loss_mean,
            "final_val_loss_std": loss_std,
            "train_seconds_mean": secs_mean,
        }
        diag_keys = sorted({k for c in group for k in c["diagnostics"]})
        for key in diag_keys:
            row[f"{key}_mean"] = _mean_std([c["diagnostics"].get(key) for c in group])[0]
        rows.append(row)

    verdict = _verdict(rows, metric, len(seeds))
    first = configs[(activations[0], seeds[0])]
    table = {
        "metric": metric,
        "activations": activations,
        "seeds": seeds,
        "hidden": list(hidden) if hidden is not None else list(base.head.hidden),
        "hidden_defaulted": hidden_defaulted,
        "rows": rows,
        **verdict,
    }
    command = _command(config, activations, seeds, output_dir, overrides, hidden if not hidden_defaulted else None)

    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(output_dir / "results.csv", rows)
    atomic_write(output_dir / "results.md", _markdown_table(rows, metric))
    _plot_curves(output_dir / "curves.png", cells, activations, metric)
    _plot_bars(output_dir / "bars.png", rows, metric)
    study = {
        "config": str(config),
        "overrides": overrides,
        "command": command,
        "resolved_config": first.to_dict(),
        "table": table,
        "cells": {
            name: {k: v for k, v in c.items() if k != "histories"} | {"histories": c["histories"]}
            for name, c in cells.items()
        },
    }
    atomic_write(output_dir / "study.json", to_json(study, indent=2) + "\n")
    atomic_write(output_dir / "README.md", _readme(table, first, command))
    return table


def _verdict(rows: list[dict[str, Any]], metric: str, n_seeds: int) -> dict[str, Any]:
    key = f"final_{metric}_mean"
    ranked = sorted(rows, key=lambda r: -r[key] if math.isfinite(r[key]) else math.inf)
    winner = ranked[0]
    out: dict[str, Any] = {"winner": winner["activation"], "runner_up": None, "margin_pp": None,
                           "pooled_std_pp": None, "margin_exceeds_pooled_std": None, "tie": False}  # fmt: skip
    if len(ranked) > 1:
        second = ranked[1]
        margin = winner[key] - second[key]
        out.update(runner_up=second["activation"], margin_pp=100.0 * margin, tie=margin == 0.0)
        s1, s2 = winner[f"final_{metric}_std"], second[f"final_{metric}_std"]
        if n_seeds > 1 and math.isfinite(s1) and math.isfinite(s2):
            pooled = math.sqrt((s1 * s1 + s2 * s2) / 2.0)
            out.update(pooled_std_pp=100.0 * pooled, margin_exceeds_pooled_std=bool(margin > pooled))
    return out


def _command(config: Path, activations: list[str], seeds: list[int], output_dir: Path, overrides: list[str],
             hidden: list[int] | None) -> str:  # fmt: skip
    # --seeds N means seeds 0..N-1; anything else is a comma list (a trailing comma marks a single explicit seed)
    if seeds == list(range(len(seeds))):
        seed_arg = str(len(seeds))
    else:
        seed_arg = ",".join(map(str, seeds)) + ("," if len(seeds) == 1 else "")
    parts = ["audiokit", "compare-activations", str(config), "--activations", ",".join(activations),
             "--seeds", seed_arg, "--output", str(output_dir)]  # fmt: skip
    for item in overrides:
        parts += ["--set", item]
    if hidden is not None:
        parts += ["--set", f"head.hidden={json.dumps(list(hidden))}"]
    return " ".join(shlex.quote(p) for p in parts)


# -- artefacts --------------------------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, buffer.getvalue())


def _markdown_table(rows: list[dict[str, Any]], metric: str) -> str:
    diag = list(dict.fromkeys(k for r in rows for k in r if k.endswith("_mean") and "." in k))
    header = ["activation", "seeds", f"final {metric}", f"best-epoch {metric} (optimistic)", "final val loss",
              "train s", *[k[: -len("_mean")] for k in diag]]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r["activation"],
            str(r["seeds"]),
            _fmt(r[f"final_{metric}_mean"], r[f"final_{metric}_std"]),
            _fmt(r[f"best_epoch_{metric}_mean"], r[f"best_epoch_{metric}_std"]),
            _fmt(r["final_val_loss_mean"], r["final_val_loss_std"]),
            _fmt(r["train_seconds_mean"], None, 1),
            *[_fmt(r.get(k), None, 3) for k in diag],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\n".join(lines)
        + "\n\nmean ± sample std over seeds (no ± with a single seed). 'final' is the last epoch; 'best-epoch' picks "
        "the epoch on the evaluation split itself and is optimistic. Diagnostics: last epoch, mean over hidden "
        "layers and seeds.\n"
    )


def _new_figure(figsize: tuple[float, float]):
    """A figure drawn by the Agg renderer without pyplot: no global backend switch, no GUI, no shared state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def _plot_curves(path: Path, cells: dict[str, dict[str, Any]], activations: list[str], metric: str) -> None:
    fig = _new_figure((11, 4))
    ax_metric, ax_loss = fig.subplots(1, 2)
    for activation in activations:
        group = [c for c in cells.values() if c["activation"] == activation]
        epochs, values = _epoch_curves(group, f"val_{metric}")
        ax_metric.plot(epochs, values, marker="o", label=activation)
        epochs, values = _epoch_curves(group, "train_loss")
        ax_loss.plot(epochs, values, marker="o", label=activation)
    ax_metric.set(xlabel="epoch", ylabel=f"val {metric}", title=f"validation {metric} (mean over seeds)")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss (mean over seeds)")
    for ax in (ax_metric, ax_loss):
        ax.legend(title="activation")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _save_figure(fig, path)


def _plot_bars(path: Path, rows: list[dict[str, Any]], metric: str) -> None:
    names = [r["activation"] for r in rows]
    means = [r[f"final_{metric}_mean"] for r in rows]
    stds = [r[f"final_{metric}_std"] for r in rows]
    errors = [s if math.isfinite(s) else 0.0 for s in stds]
    fig = _new_figure((max(4.0, 1.3 * len(rows) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(rows))
    bars = ax.bar(x, means, yerr=errors, capsize=6, color="tab:blue", alpha=0.8)
    labels = [_fmt(m, s, 3) for m, s in zip(means, stds)]
    ax.bar_label(bars, labels=labels, padding=3)
    ax.set_xticks(x, names)
    ax.set(xlabel="head activation", ylabel=f"final val {metric}",
           title=f"final val {metric}: mean ± std over seeds")  # fmt: skip
    top = max([m + e for m, e in zip(means, errors) if math.isfinite(m)] or [1.0])
    ax.set_ylim(0, max(top * 1.15, 1e-6))
    _save_figure(fig, path)


def _readme(table: dict[str, Any], first: RunConfig, command: str) -> str:
    metric = table["metric"]
    n_seeds = len(table["seeds"])
    row = {r["activation"]: r for r in table["rows"]}
    win = row[table["winner"]]
    lines = ["# Activation study", ""]
    score = _fmt(win[f"final_{metric}_mean"], win[f"final_{metric}_std"])
    if table["runner_up"] is None:
        lines.append(f"Only one activation was run: **{table['winner']}** (final val {metric} {score}).")
    else:
        second = row[table["runner_up"]]
        other = _fmt(second[f"final_{metric}_mean"], second[f"final_{metric}_std"])
        if table["tie"]:
            lines.append(f"No winner: **{table['winner']}** and **{table['runner_up']}** tie on final val {metric} "
                         f"({score} vs {other}); {table['winner']} is listed first.")  # fmt: skip
        else:
            lines.append(f"Winner: **{table['winner']}** with final val {metric} {score}, "
                         f"{table['margin_pp']:.2f} percentage points ahead of the runner-up "
                         f"{table['runner_up']} ({other}).")  # fmt: skip
        if n_seeds < 2:
            lines.append("")
            lines.append(
                "With a single seed no standard deviation is available, so it cannot be said whether this "
                "difference is larger than seed-to-seed noise. Run more seeds before drawing conclusions."
            )
        elif table["margin_exceeds_pooled_std"]:
            lines.append("")
            lines.append(f"The difference exceeds the pooled standard deviation over {n_seeds} seeds "
                         f"({table['pooled_std_pp']:.2f} pp), a hint rather than a significance test.")  # fmt: skip
        else:
            lines.append("")
            lines.append(f"The difference does **not** exceed the pooled standard deviation over {n_seeds} seeds "
                         f"({table['pooled_std_pp']:.2f} pp): within seed-to-seed noise.")  # fmt: skip
    lines += ["", "Scores are from the last epoch; see `results.md` for the optimistic best-epoch scores, validation",
              "loss, training time and head diagnostics, `curves.png` and `bars.png` for plots, `study.json` for",
              "every cell's per-epoch history.", ""]  # fmt: skip
    if table["hidden_defaulted"]:
        lines += [f"The configuration's head had no hidden layer, so `head.hidden={table['hidden']}` was used for "
                  "every cell (otherwise the activation would not exist).", ""]  # fmt: skip
    lines += [f"Seeds: {table['seeds']} (`train.seed` also seeds the hold-out split of folder/manifest data).", "",
              "## Reproduce", "", "```sh", command, "```", "",
              "## Resolved configuration", "",
              f"`head.activation` varies over {table['activations']} and `train.seed` over {table['seeds']}; shown "
              "for the first cell.", "", "```yaml",
              yaml.safe_dump(first.to_dict(), sort_keys=False).rstrip(), "```", ""]  # fmt: skip
    return "\n".join(lines)
