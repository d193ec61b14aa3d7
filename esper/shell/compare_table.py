"""`esper-run compare` output (docs/runtime.md §9): compare.md, compare.json and the console table.

One row per group; every cell is mean ± sample std over the group's seeds. Accuracies are shown as
percentages with 2 decimals, FLOPs in engineering notation (3 significant digits, exponent a multiple
of 3: 1.23e12, 45.0e9). The last column is Welch's t-test of the group's final val acc against the
reference group (`static`): Δ in percentage points, p, and the verdict ("real" only when p < α).
"""

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from esper.core import codec
from esper.core.stats import DEFAULT_ALPHA, GroupStats, RunRecord, Summary, WelchResult, welch

HEADERS = ("group", "n", "final val acc (mean ± std, min–max)", "best val acc", "params", "train FLOPs", "wall s",
           "fossilized", "culled", "vs static (Δ, p, verdict)")
NONE = "—"


def eng(x: float) -> str:
    """Engineering notation, 3 significant digits: 1.23e12, 45.0e9, 123e6, 0 → "0"."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    sign, x = ("-" if x < 0 else ""), abs(x)
    x = float(f"{x:.3g}")  # round first so 999.6e9 becomes 1.00e12, not 1000e9
    exp = 3 * math.floor(math.log10(x) / 3)
    mant = x / 10.0**exp
    decimals = 2 - math.floor(math.log10(mant) + 1e-9)  # 1.23 | 45.0 | 123
    body = f"{mant:.{max(decimals, 0)}f}"
    return f"{sign}{body}" if exp == 0 else f"{sign}{body}e{exp}"


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def acc_cell(s: Summary, with_range: bool) -> str:
    text = f"{_pct(s.mean)} ± {_pct(s.std)}"
    return f"{text} ({_pct(s.min)}–{_pct(s.max)})" if with_range else text


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def welch_cell(w: WelchResult | None) -> str:
    if w is None:
        return NONE
    return f"Δ {100.0 * w.diff:+.2f} pp, {_p_text(w.p)}, {w.verdict}"


def row_cells(g: GroupStats) -> list[str]:
    """The cells of one row, shared by the markdown and console tables."""
    return [
        g.group,
        str(g.n),
        acc_cell(g.final, with_range=True),
        acc_cell(g.best, with_range=False),
        f"{g.params.mean:,.0f} ± {g.params.std:,.0f}",
        f"{eng(g.flops.mean)} ± {eng(g.flops.std)}",
        f"{g.wall.mean:.1f} ± {g.wall.std:.1f}",
        f"{g.fossilized.mean:.1f} ± {g.fossilized.std:.1f}",
        f"{g.culled.mean:.1f} ± {g.culled.std:.1f}",
        welch_cell(g.vs_static),
    ]


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _alpha(stats: Sequence[GroupStats]) -> float:
    alphas = {g.vs_static.alpha for g in stats if g.vs_static is not None}
    return alphas.pop() if len(alphas) == 1 else 0.05


def markdown_table(stats: list[GroupStats], *, task: str, epochs: int, device: str, data_source: str,
                   command: str) -> str:
    """The compare.md document: header line, the exact command, the table, and how to read it."""
    lines = [
        f"# esper-run compare: {task}",
        "",
        f"Task `{task}`, {epochs} epochs, device `{device}`, data source: {data_source}.",
        "",
        "```sh",
        command,
        "```",
        "",
        _md_row(HEADERS),
        "|" + "|".join("---" for _ in HEADERS) + "|",
        *(_md_row(row_cells(g)) for g in stats),
        "",
        f"Mean ± sample std (n − 1) over seeds; accuracies in %, min–max in parentheses. \"vs static\": Welch's t-test "
        f"of final val acc against `static`, Δ in percentage points; \"real\" only when p < {_alpha(stats):g}, "
        "else \"within noise\".",
        "",
    ]
    return "\n".join(lines)


def match_note(name: str, width: int, value: float, target: float, within: bool) -> str:
    """compare.md's line under the table for one matched static group: its width, the matched quantity
    (params or training FLOPs) against the grown runs' mean, and whether it came within 5 %."""
    verdict = "within" if within else "outside"
    return f"{name}: host width {width} ({value:.4g} vs grown mean {target:.4g}, {verdict} 5 %)"


def controller_notes(records: Sequence[RunRecord], alpha: float = DEFAULT_ALPHA) -> str:
    """compare.md's head-to-head lines when two or more controllers grow (e.g. heuristic, ppo): each later
    controller against each earlier one, Welch's t of final val acc (Δ = later − earlier) and the ratio of
    their mean training FLOPs. Empty for a compare of one controller."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        if not r.group.startswith("static"):
            groups.setdefault(r.group, []).append(r)
    names, lines = list(groups), []
    for j, later in enumerate(names):
        for earlier in names[:j]:
            w = welch([r.final_val_acc for r in groups[later]], [r.final_val_acc for r in groups[earlier]], alpha)
            flops = _mean_flops(groups[later]) / _mean_flops(groups[earlier])
            lines.append(f"\n{later} vs {earlier} (Welch's t of final val acc): {welch_cell(w)}; "
                         f"train FLOPs {flops:.2f}× {earlier}'s\n")
    return "".join(lines)


def _mean_flops(records: Sequence[RunRecord]) -> float:
    return sum(r.train_flops for r in records) / len(records)


def console_table(stats: list[GroupStats]) -> Table:
    table = Table(title="compare")
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i in (0, len(HEADERS) - 1) else "right")
    for g in stats:
        table.add_row(*row_cells(g))
    return table


def _jsonable(x: Any) -> Any:
    """Recursively replace non-finite floats by None (strict JSON has no NaN) and tuples by lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, str | int | bool):
        return x
    raise TypeError(f"compare_json: {type(x).__name__} is not a JSON type")


def compare_json(stats: Sequence[GroupStats], records: Sequence[RunRecord], meta: dict[str, Any]) -> dict[str, Any]:
    """compare.json: {meta, groups, records}; NaN/inf become null so `json.dumps(allow_nan=False)` works."""
    return _jsonable({
        "meta": meta,
        "groups": codec.encode(list(stats)),
        "records": codec.encode(list(records)),
    })
