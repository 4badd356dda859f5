"""IGNITE's headline comparison: each baseline with and without the constraint.

Dao, Nguyen, Truong, Hoang (NeurIPS 2024) report, over 11 baselines x 4 tasks, how many
(baseline, task) cases the constraint improves at the 100th percentile, how many it leaves
unchanged and how many it makes worse, with the mean and extreme changes (35 of 44 improved,
mean +1.91%, peak +9.6%; 4 worse, mean -0.3%, at most -0.7%; 5 unchanged). This module pairs a
grid's table entries (:func:`lightning_mbo.benchmark.summarize`) by baseline — a method and the
same method with ``+ignite`` — and computes those statistics the same way: the change of the mean
over seeds, relative to the baseline's mean, in percent; a case is "unchanged" when the two means
agree to the three decimals the paper's tables print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def format_comparison(table: list[dict[str, Any]]) -> str:
    """The Markdown comparison: per task and baseline, base vs +IGNITE at each percentile, the
    gain, the starting designs' score and the published cells; then the headline per percentile."""
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
    md += ["", "Changes are of the mean over seeds, relative to the baseline's mean; unchanged: equal to three "
           "decimals.", ""]
    for percentile in ("100th", "80th", "50th"):
        md.append(f"- {percentile} percentile: {format_headline(headline(cases, percentile))}")
    md += [f"- {PAPER_HEADLINE}", ""]
    return "\n".join(md)
