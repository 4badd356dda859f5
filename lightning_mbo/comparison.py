"""IGNITE's headline comparison: each baseline with and without the constraint.

Dao, Nguyen, Truong, Hoang (NeurIPS 2024) report, over 11 baselines x 4 tasks, how many
(baseline, task) cases the constraint improves at the 100th percentile, how many it leaves
unchanged and how many it makes worse, with the mean and extreme changes (35 of 44 improved,
mean +1.91%, peak +9.6%; 4 worse, mean -0.3%, at most -0.7%; 5 unchanged). This module pairs a
grid's table entries (:func:`lightning_mbo.table.summarize`) by baseline — a method and the
same method with ``+ignite`` — and computes those statistics the same way: the change of the mean
over seeds, relative to the baseline's mean, in percent; a case is "unchanged" when the two means
agree to the three decimals the paper's tables print. That count is kept, labelled as the paper's
rule, but it cannot tell a real change from the spread of a few seeds.

So every comparison also says, from the per-run scores (:mod:`lightning_mbo.statistics`), whether a
change is real: per cell (task x baseline x percentile) the difference of the means with a 95%
bootstrap interval, a two-sided permutation test and the verdict of the interval (improved: above
0, decreased: below 0, unchanged: contains 0, n/a: fewer than 2 runs a side); per baseline over the
grid's tasks, the interquartile mean of each side and the probability that a run with IGNITE beats
a run without, with stratified bootstrap intervals (Agarwal et al., NeurIPS 2021), and the mean rank
of each among all the grid's methods. :func:`write_comparison` also writes ``comparison.csv`` (one
row per cell) and ``comparison.png`` (the intervals per baseline).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lightning_mbo.results import atomic_write
from lightning_mbo.statistics import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Difference,
    Interval,
    difference_of_means,
    iqm,
    mean_ranks,
    probability_of_improvement,
)

#: The percentiles every comparison reports.
PERCENTILES = ("100th", "80th", "50th")

#: Cells the IGNITE paper states in its text (100th percentile, base -> +IGNITE).
PUBLISHED_PAIRS: dict[tuple[str, str], tuple[float, float]] = {
    ("TFBind8-Exact-v0", "ens_mean"): (0.985, 0.987),
    ("TFBind10-Exact-v0", "ens_min"): (0.681, 0.705),
}

#: The paper's own summary over its 44 cases, for the table's last line.
PAPER_HEADLINE = "paper (44 cases, 4 tasks): 35 improved (mean +1.91%, peak +9.6%), 5 unchanged, 4 decreased " \
                 "(mean -0.3%, at most -0.7%)"


@dataclass(frozen=True)
class Pair:
    """One (task, baseline) case: the table entries of the baseline and of baseline + IGNITE."""

    task: str
    baseline: str
    base: dict[str, Any]
    ignite: dict[str, Any]

    def gain(self, percentile: str = "100th") -> float:
        """Relative change of the mean, in percent: ``100 (ignite − base) / |base|``."""
        b, i = self.base[f"score_{percentile}_mean"], self.ignite[f"score_{percentile}_mean"]
        return 100.0 * (i - b) / abs(b) if b else float("inf") if i > b else 0.0

    def unchanged(self, percentile: str = "100th") -> bool:
        """The two means agree to three decimals (as the paper's tables print them)."""
        return round(self.base[f"score_{percentile}_mean"], 3) == round(self.ignite[f"score_{percentile}_mean"], 3)


def baseline_of(run: str) -> str:
    """The case a run belongs to: its name without the IGNITE marker (``ens_min_ignite`` and
    ``ens_min+ignite`` -> ``ens_min``; ``reinforce_fixed_ignite`` -> ``reinforce_fixed``)."""
    return run.replace("+ignite", "").removesuffix("_ignite")


def pairs(table: list[dict[str, Any]]) -> list[Pair]:
    """Pair the entries of a summarised table by task and baseline: the entry whose method has IGNITE
    with the one that has not (entries without a partner are left out)."""
    by_key = {(e["task"], baseline_of(e["run"]), "+ignite" in e["method"]): e for e in table}
    out = [Pair(task, baseline, entry, by_key[(task, baseline, True)])
           for (task, baseline, with_ignite), entry in by_key.items()
           if not with_ignite and (task, baseline, True) in by_key]
    return sorted(out, key=lambda p: (p.task, p.baseline))


def headline(cases: list[Pair], percentile: str = "100th") -> dict[str, Any]:
    """Improved / unchanged / decreased counts and the mean and extreme relative changes (percent)."""
    up = [p.gain(percentile) for p in cases if not p.unchanged(percentile) and p.gain(percentile) > 0]
    down = [p.gain(percentile) for p in cases if not p.unchanged(percentile) and p.gain(percentile) < 0]
    same = [p for p in cases if p.unchanged(percentile) or p.gain(percentile) == 0]
    return {
        "cases": len(cases), "improved": len(up), "unchanged": len(same), "decreased": len(down),
        "mean_gain": sum(up) / len(up) if up else None, "peak_gain": max(up) if up else None,
        "mean_loss": sum(down) / len(down) if down else None, "worst_loss": min(down) if down else None,
    }


def _pm(entry: dict[str, Any], percentile: str) -> str:
    return f"{entry[f'score_{percentile}_mean']:.3f} ± {entry[f'score_{percentile}_std']:.3f}"


def format_headline(stats: dict[str, Any]) -> str:
    """One line: ``12 cases: 8 improved (mean +1.2%, peak +3.0%), 2 unchanged, 2 decreased (...)``."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:+.2f}%"

    cases = f"{stats['cases']} case" + ("" if stats["cases"] == 1 else "s")
    return (f"{cases}: {stats['improved']} improved (mean {pct(stats['mean_gain'])}, peak "
            f"{pct(stats['peak_gain'])}), {stats['unchanged']} unchanged, {stats['decreased']} decreased (mean "
            f"{pct(stats['mean_loss'])}, at most {pct(stats['worst_loss'])})")


def paper_verdict(pair: Pair, percentile: str = "100th") -> str:
    """The case by the paper's rule (as :func:`headline` counts it): ``unchanged`` when the means agree to
    three decimals, else ``improved`` or ``decreased`` by the sign of the change."""
    gain = pair.gain(percentile)
    return "unchanged" if pair.unchanged(percentile) or gain == 0 else "improved" if gain > 0 else "decreased"


@dataclass(frozen=True)
class Cell:
    """One cell of a comparison: a case at one percentile, with the difference of its per-run scores."""

    pair: Pair
    percentile: str
    difference: Difference


def run_scores(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, ...]]]:
    """Per (task, run): every percentile's score of each of its runs (seeds and replicates), in row order."""
    out: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {}
    for row in rows:
        cell = out.setdefault((row["task"], row["run"]), {p: () for p in PERCENTILES})
        for p in PERCENTILES:
            cell[p] += (float(row[f"score_{p}"]),)
    return out


def _scores(scores: dict[tuple[str, str], dict[str, tuple[float, ...]]], entry: dict[str, Any],
            percentile: str) -> tuple[float, ...]:
    key = (entry["task"], entry["run"])
    if key not in scores:
        raise ValueError(f"no per-run rows for run '{entry['run']}' on {entry['task']}: pass the rows the table "
                         "was summarised from")
    return scores[key][percentile]


# The same runs give the same statistics (seeded): compute them once for the table, the CSV and the figure.
_difference = lru_cache(maxsize=4096)(difference_of_means)
_iqm = lru_cache(maxsize=1024)(iqm)
_improvement = lru_cache(maxsize=1024)(probability_of_improvement)


def cells(cases: list[Pair], rows: list[dict[str, Any]]) -> list[Cell]:
    """Every case at every percentile, with the difference of means (+IGNITE minus base) over its runs."""
    scores = run_scores(rows)
    return [Cell(p, q, _difference(_scores(scores, p.base, q), _scores(scores, p.ignite, q)))
            for p in cases for q in PERCENTILES]


def interval_headline(comparisons: list[Cell], percentile: str = "100th") -> dict[str, int]:
    """Improved / unchanged / decreased / n/a counts by the interval, at one percentile."""
    verdicts = [c.difference.verdict for c in comparisons if c.percentile == percentile]
    return {"cases": len(verdicts), **{v: verdicts.count(v) for v in ("improved", "unchanged", "decreased", "n/a")}}


@dataclass(frozen=True)
class Aggregate:
    """One baseline over the grid's tasks (or ``all baselines`` over every case) at one percentile.

    Attributes:
        name: the baseline (its method; its run name where one task has two runs of that method).
        tasks: tasks (cases, for all baselines) it was compared on.
        runs: runs without and with IGNITE, over those tasks.
        base, ignite: IQM of the normalised scores, stratified bootstrap interval.
        improvement: P(a run with IGNITE scores above a run without), averaged over tasks, and its interval.
        base_rank, ignite_rank: mean rank by mean score among all the grid's methods, over its tasks.
    """

    name: str
    tasks: int
    runs: tuple[int, int]
    base: Interval
    ignite: Interval
    improvement: Interval
    base_rank: float | None = None
    ignite_rank: float | None = None


def _method_names(table: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """A name per (task, run) that is the same on every task: its method, or its run name where two runs of
    one task share a method (e.g. ``reinforce`` and ``reinforce_fixed``)."""
    runs: dict[tuple[str, str], set[str]] = {}
    for e in table:
        runs.setdefault((e["task"], e["method"]), set()).add(e["run"])
    return {(e["task"], e["run"]): e["method"] if len(runs[(e["task"], e["method"])]) == 1 else e["run"]
            for e in table}


def aggregates(table: list[dict[str, Any]], rows: list[dict[str, Any]], percentile: str = "100th") -> list[Aggregate]:
    """Per baseline over its tasks, then all baselines over every case: IQMs, probability of improvement
    and mean ranks (ranks by each (task, run)'s mean score among all the table's methods)."""
    scores, names = run_scores(rows), _method_names(table)
    by_task: dict[str, dict[str, float]] = {}
    for e in table:
        by_task.setdefault(e["task"], {})[names[(e["task"], e["run"])]] = e[f"score_{percentile}_mean"]
    ranks = mean_ranks(by_task)
    groups: dict[str, list[Pair]] = {}
    for p in pairs(table):
        groups.setdefault(names[(p.task, p.base["run"])], []).append(p)

    def aggregate(name: str, cases: list[Pair], ranked: bool) -> Aggregate:
        base = tuple(_scores(scores, p.base, percentile) for p in cases)
        ignite = tuple(_scores(scores, p.ignite, percentile) for p in cases)
        rank = (lambda e: ranks[names[(e["task"], e["run"])]][0]) if ranked else (lambda e: None)
        return Aggregate(name, len(cases), (sum(map(len, base)), sum(map(len, ignite))), _iqm(base), _iqm(ignite),
                         _improvement(ignite, base), rank(cases[0].base), rank(cases[0].ignite))

    out = [aggregate(name, cases, True) for name, cases in sorted(groups.items())]
    if len(out) > 1:
        out.append(aggregate("all baselines", [p for name in sorted(groups) for p in groups[name]], False))
    return out


def format_interval_headline(stats: dict[str, int]) -> str:
    """One line: ``12 cases: 1 improved, 10 unchanged, 1 decreased, 0 n/a``."""
    cases = f"{stats['cases']} case" + ("" if stats["cases"] == 1 else "s")
    return (f"{cases}: {stats['improved']} improved, {stats['unchanged']} unchanged, {stats['decreased']} "
            f"decreased, {stats['n/a']} n/a")


def _interval(iv: Interval, digits: int = 3, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    bounds = "n/a" if iv.low is None or iv.high is None else f"{fmt.format(iv.low)}, {fmt.format(iv.high)}"
    return f"{fmt.format(iv.estimate)} [{bounds}]"


#: Under the interval table: what it says.
INTERVAL_NOTE = (
    f"Δ: mean over runs with IGNITE minus without, with its {100 * CONFIDENCE:.0f}% percentile bootstrap interval "
    f"(each side's runs resampled on their own, {RESAMPLES} resamples, seed {SEED}); p: two-sided permutation test "
    "of the same difference (exact over all splits of the runs where there are few: with 3 runs a side the smallest "
    "p is 0.1); verdict by the interval: improved when it lies above 0, decreased when below, unchanged when it "
    "contains 0, n/a with fewer than 2 runs a side. With a few runs the interval is narrower than its nominal "
    "coverage: an interval that just excludes 0 next to a large p is weak evidence.")

#: Under the aggregate table: what it says.
AGGREGATE_NOTE = (
    "IQM: interquartile mean (mean of the middle half) of the normalised scores of all runs on all the baseline's "
    "tasks; P(+IGNITE > base): chance that a run with IGNITE scores above a run without on the same task (0.5: no "
    "difference), averaged over tasks; both with stratified bootstrap intervals (runs resampled within each task; "
    "Agarwal et al., NeurIPS 2021). Mean rank: rank by mean score among all the grid's methods on each task "
    "(1 = best), averaged over tasks. The intervals per baseline are drawn in comparison.png.")


def format_comparison(table: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> str:
    """The Markdown comparison: per task and baseline, base vs +IGNITE at each percentile, the paper's
    gain, the starting designs' score and the published cells; the paper's headline per percentile; then,
    from the per-run ``rows`` the table was summarised from, each cell's difference with its interval, test
    and verdict, the headline by the interval, and the aggregates at the 100th percentile."""
    cases = pairs(table)
    if not cases:
        return ""
    md = ["## With and without IGNITE", "",
          "| task | baseline | seeds | 100th base | 100th +IGNITE | gain 100th | 80th base | 80th +IGNITE "
          "| 50th base | 50th +IGNITE | starting designs 100th | D(best) | published 100th (base -> +IGNITE) |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in cases:
        start = p.base.get("start_score_100th")
        published = PUBLISHED_PAIRS.get((p.task, baseline_of(p.base['method'])))
        md.append(
            f"| {p.task} | {p.baseline} | {min(p.base['seeds'], p.ignite['seeds'])} "
            f"| {_pm(p.base, '100th')} | {_pm(p.ignite, '100th')} | {p.gain('100th'):+.2f}% "
            f"| {_pm(p.base, '80th')} | {_pm(p.ignite, '80th')} | {_pm(p.base, '50th')} | {_pm(p.ignite, '50th')} "
            f"| {'-' if start is None else f'{start:.3f}'} | {p.base['best_visible']:.3f} "
            f"| {'-' if published is None else f'{published[0]:.3f} -> {published[1]:.3f}'} |"
        )
    md += ["", "The paper's rule (Dao et al. 2024 count their 44 cases this way): changes are of the mean over seeds, "
           "relative to the baseline's mean; unchanged: equal to three decimals. It does not say whether a change "
           "is larger than the spread of the seeds: see the intervals below.", ""]
    for percentile in PERCENTILES:
        md.append(f"- {percentile} percentile: {format_headline(headline(cases, percentile))}")
    md += [f"- {PAPER_HEADLINE}", ""]
    if rows is None:
        return "\n".join([*md, "No per-run scores were given: no intervals.", ""])
    return "\n".join(md + _interval_section(cells(cases, rows)) + _aggregate_section(aggregates(table, rows)))


def _interval_section(comparisons: list[Cell]) -> list[str]:
    md = ["### Is the change real? Difference of the means with its 95% interval", "",
          "| task | baseline | runs base / +IGNITE | "
          + " | ".join(f"{q} Δ [95% CI] | p | verdict" for q in PERCENTILES) + " |",
          "| --- " * (3 + 3 * len(PERCENTILES)) + "|"]
    for i in range(0, len(comparisons), len(PERCENTILES)):
        row = comparisons[i:i + len(PERCENTILES)]
        d0 = row[0].difference
        md.append(f"| {row[0].pair.task} | {row[0].pair.baseline} | {d0.n_base} / {d0.n_other} | " + " | ".join(
            f"{_interval(d.interval, sign=True)} | {'n/a' if d.p_value is None else f'{d.p_value:.2g}'} | {d.verdict}"
            for d in (c.difference for c in row)) + " |")
    md += ["", INTERVAL_NOTE, "", "Counted by the interval:", ""]
    md += [f"- {q} percentile: {format_interval_headline(interval_headline(comparisons, q))}" for q in PERCENTILES]
    return [*md, ""]


def _aggregate_section(rows: list[Aggregate]) -> list[str]:
    md = ["### Over the grid's tasks, per baseline (100th percentile)", "",
          "| baseline | tasks | runs base / +IGNITE | IQM base [95% CI] | IQM +IGNITE [95% CI] "
          "| P(+IGNITE > base) [95% CI] | mean rank base | mean rank +IGNITE |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a in rows:
        ranks = ["-" if r is None else f"{r:.2f}" for r in (a.base_rank, a.ignite_rank)]
        md.append(f"| {a.name} | {a.tasks} | {a.runs[0]} / {a.runs[1]} | {_interval(a.base)} | {_interval(a.ignite)} "
                  f"| {_interval(a.improvement, 2)} | {ranks[0]} | {ranks[1]} |")
    return [*md, "", AGGREGATE_NOTE, ""]


#: Columns of ``comparison.csv``.
CELL_FIELDS = ("task", "baseline", "percentile", "runs_base", "runs_ignite", "mean_base", "mean_ignite", "difference",
               "ci_low", "ci_high", "p_value", "verdict", "gain_percent", "paper_rule")


def cell_records(comparisons: list[Cell]) -> list[dict[str, Any]]:
    """One ``comparison.csv`` row per cell: the difference, its interval, p and verdict, and the paper's rule."""
    return [{"task": c.pair.task, "baseline": c.pair.baseline, "percentile": c.percentile,
             "runs_base": c.difference.n_base, "runs_ignite": c.difference.n_other,
             "mean_base": c.difference.base_mean, "mean_ignite": c.difference.other_mean,
             "difference": c.difference.interval.estimate, "ci_low": c.difference.interval.low,
             "ci_high": c.difference.interval.high, "p_value": c.difference.p_value, "verdict": c.difference.verdict,
             "gain_percent": c.pair.gain(c.percentile), "paper_rule": paper_verdict(c.pair, c.percentile)}
            for c in comparisons]


def write_comparison(table: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path) -> str:
    """Write ``comparison.csv`` and ``comparison.png`` into ``out`` (atomically) where the table has cases;
    return :func:`format_comparison`'s Markdown ("" without cases)."""
    cases = pairs(table)
    if not cases:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CELL_FIELDS))
    writer.writeheader()
    writer.writerows(cell_records(cells(cases, rows)))
    atomic_write(out / "comparison.csv", lambda f: f.write(buf.getvalue().encode()))
    plot_comparison(aggregates(table, rows), out / "comparison.png")
    return format_comparison(table, rows)


def plot_comparison(rows: list[Aggregate], path: Path) -> None:
    """Interval estimates per baseline in the style of rliable's ``plot_interval_estimates``: the IQM with
    and without IGNITE (left) and P(+IGNITE > base) (right), each a bar over its 95% interval with a tick
    at the estimate."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 1.2 + 0.42 * len(rows)), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})

    def bar(ax: Any, y: float, iv: Interval, color: str) -> None:
        if iv.low is not None and iv.high is not None:  # an estimate without an interval: the tick alone
            ax.barh(y, iv.high - iv.low, left=iv.low, height=0.32, color=color, alpha=0.75)
        ax.vlines(iv.estimate, y - 0.16, y + 0.16, colors="black", linewidth=1.5)

    for i, a in enumerate(reversed(rows)):
        bar(left, i + 0.18, a.base, "tab:grey")
        bar(left, i - 0.18, a.ignite, "tab:orange")
        bar(right, i, a.improvement, "tab:blue")
    ends = [v for a in rows for iv in (a.base, a.ignite) for v in (iv.low, iv.estimate, iv.high) if v is not None]
    pad = 0.05 * (max(ends) - min(ends) or 0.01)
    left.set_xlim(min(ends) - pad, max(ends) + pad)  # bars would pin the axis at their ends
    left.set_yticks(range(len(rows)), [f"{a.name} ({a.tasks})" for a in reversed(rows)], fontsize=8)
    left.set_xlabel("IQM of normalised 100th percentile")
    left.legend(handles=[Patch(color="tab:grey", alpha=0.75, label="without IGNITE"),
                         Patch(color="tab:orange", alpha=0.75, label="with IGNITE")],
                fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    right.axvline(0.5, color="grey", linestyle="dashed", linewidth=1)
    right.set_xlim(0, 1)
    right.set_xlabel("P(+IGNITE > base)")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"{100 * CONFIDENCE:.0f}% stratified bootstrap intervals (tick: estimate; in brackets: tasks)",
                 fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
