"""claims.md: every claim of tables.yaml checked on the published numbers and on ours.

    results = evaluate_claims(cfg["claims"], published, ours)   # ours: published id -> measured cell
    write_claims(results, Path("results/claims.md"), scale="tiny")

A claim names values (published ids, or `run:<task>/<variant>:<metric>`) and a check expression
over them. The expression is evaluated by a small whitelist interpreter (comparisons, arithmetic,
and/or/not, abs/min/max/round): a claim is data, never code.

On the published numbers a check is evaluated on the point values. On ours, each value is the list
of per-seed results; a check that is a conjunction of comparisons (a > b > c, a > max(b, c),
a >= b - 0.5, ... see stats.comparisons) is decided pair by pair on a 95 % interval of the difference
of means (stats.interval; the claim's `stats:` key picks welch (default), paired or bootstrap), and
each pair shows our effect with its interval beside the published effect. Verdicts: holds (every
pair's interval on the claimed side), fails (some pair's interval on the other side), inconclusive,
or not measurable (a value missing, or two rows that are the same model at this scale).
"""
from __future__ import annotations

import ast
import json
import operator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError
from ..io import atomic_write_text
from ..runs import seed_folder
from .published import Published
from . import stats

HOLDS, FAILS, NOT_MEASURABLE = "holds", "fails", "not measurable at this scale"
INCONCLUSIVE = stats.INCONCLUSIVE
DEFAULT_METHOD = "welch"
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_COMPARE = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FUNCTIONS = {"abs": abs, "min": min, "max": max, "round": round}


def evaluate_expression(expression: str, names: dict):
    """Evaluate a check such as 'a > b > c' or 'abs(x / y - 3.3) <= 0.1' over `names`."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"check {expression!r}: invalid expression ({err.msg})") from None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ConfigError(f"check {expression!r}: unknown name {node.id!r}; values are {sorted(names)}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            left = ev(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = ev(comparator)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords):
            return _FUNCTIONS[node.func.id](*(ev(a) for a in node.args))
        raise ConfigError(f"check {expression!r}: {ast.dump(node)[:60]} is not allowed "
                          "(comparisons, + - * /, and/or/not, abs/min/max/round only)")

    return ev(tree)


@dataclass
class MeasuredValue:
    value: float | None
    where: str            # the metrics.json (or table cell) it came from
    row: str = ""         # table row (for the distinct-rows rule)
    values: list = field(default_factory=list)   # per-seed values (ours)
    seeds: list = field(default_factory=list)


@dataclass
class PairResult:
    a: str
    op: str
    b: str
    margin: float
    interval: stats.Interval | None = None
    published_effect: float | None = None
    verdict: str = ""
    reason: str = ""


@dataclass
class ClaimResult:
    claim: dict
    column: str | None
    scope: str                                # "published" or "ours"
    values: dict = field(default_factory=dict)  # name -> value (None: missing)
    sources: dict = field(default_factory=dict)  # name -> where it came from
    derived: dict = field(default_factory=dict)  # `show` expressions -> value
    verdict: str = ""
    reason: str = ""
    per_seed: dict = field(default_factory=dict)  # name -> per-seed values (ours)
    n: dict = field(default_factory=dict)         # name -> number of seeds (ours)
    pairs: list = field(default_factory=list)     # PairResult per comparison (ours, statistical)
    method: str = ""


def _ref(spec, column: str | None) -> str:
    if isinstance(spec, dict):
        if column not in spec:
            raise ConfigError(f"value {spec}: no entry for column {column!r}")
        return spec[column]
    return spec.format(column=column) if column is not None else spec


def _run_value(ref: str, runs: Path | None, seeds: list[int] | None) -> MeasuredValue:
    """`run:<task>/<variant>:<metric>` -> the per-seed values (.../seed<k>/metrics.json with several seeds)."""
    _, run, metric = ref.split(":", 2)
    base = (runs / run) if runs is not None else Path(run)
    seeds = list(seeds or [0])
    paths = [(k, Path(f"{base}{seed_folder(k, seeds)}") / "metrics.json") for k in seeds]
    values, present, missing = [], [], []
    for seed, path in paths:
        if not path.exists():
            missing.append(str(path))
            continue
        value = json.loads(path.read_text()).get("metrics", {}).get(metric)
        if value is None:
            missing.append(f"{path}:{metric}")
            continue
        values.append(float(value))
        present.append(seed)
    where = f"{paths[0][1] if len(paths) == 1 else base / 'seed{k}' / 'metrics.json'}:{metric}"
    if missing:
        return MeasuredValue(None, f"{where} (missing: {', '.join(missing)})", row=run)
    return MeasuredValue(sum(values) / len(values), where, row=run, values=values, seeds=present)


def _resolve(ref: str, scope: str, published: Published, ours: dict, runs: Path | None,
             seeds: list[int] | None = None) -> MeasuredValue:
    if ref.startswith("run:"):
        if scope == "published":
            raise ConfigError(f"value {ref!r}: a run value cannot be used in the published scope")
        return _run_value(ref, runs, seeds)
    if ref not in published:
        published.value(ref)  # raises, naming the id
    if scope == "published" or ref.split(".")[0] in ("text", "readme", "facts"):
        return MeasuredValue(published.value(ref), published.source(ref))
    cell = ours.get(ref)
    if cell is None:
        return MeasuredValue(None, f"no table cell measures {ref}")
    values = list(cell.get("values") or ([] if cell.get("ours") is None else [cell["ours"]]))
    complete = cell.get("status", "ok") == "ok"
    return MeasuredValue(cell.get("ours") if complete else None, cell.get("run") or cell.get("status", ""),
                         row=cell.get("variant", ""), values=values if complete else [],
                         seeds=list(cell.get("seeds") or range(len(values))))


def _published_effect(claim: dict, column: str | None, published: Published, a: str, b: str, margin: float):
    """The published a - b (the same pair on the paper's numbers), or None."""
    specs = claim["values"]
    try:
        refs = [_ref(specs[name], column) for name in (a, b)]
    except (KeyError, ConfigError):
        return None
    if any(r.startswith("run:") or r not in published for r in refs):
        return None
    va, vb = (published.value(r) for r in refs)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb)):
        return None
    return float(va) - float(vb)


def _decide_statistically(result: ClaimResult, measured: dict, published: Published) -> bool:
    """Ours: pair-by-pair intervals. False when the check is not a conjunction of comparisons."""
    claim = result.claim
    try:
        pairs = stats.comparisons(claim["check"])
    except (ValueError, SyntaxError):
        return False
    method = claim.get("stats", DEFAULT_METHOD)
    if method not in stats.METHODS:
        raise ConfigError(f"claim {claim['id']}.stats: {method!r} is not one of {list(stats.METHODS)}")
    result.method = method
    for a, op, b, margin in pairs:
        pr = PairResult(a, op, b, margin, published_effect=_published_effect(claim, result.column, published, a, b, margin))
        ma, mb = measured[a], measured[b]
        if claim.get("distinct") and ma.values == mb.values and ma.row != mb.row:
            pr.verdict = NOT_MEASURABLE
            pr.reason = f"{a} = {b}: identical per-seed numbers from different rows (the same model at this scale)"
        else:
            pr.interval = stats.interval(ma.values, mb.values, method, seeds_a=ma.seeds, seeds_b=mb.seeds)
            pr.verdict = stats.decide(pr.interval, op, margin)
            pr.reason = pr.interval.reason
        result.pairs.append(pr)
    verdicts = [p.verdict for p in result.pairs]
    if FAILS in verdicts:
        result.verdict = FAILS
    elif INCONCLUSIVE in verdicts:
        result.verdict = INCONCLUSIVE
    elif NOT_MEASURABLE in verdicts:
        result.verdict = NOT_MEASURABLE
        result.reason = "; ".join(p.reason for p in result.pairs if p.verdict == NOT_MEASURABLE)
    else:
        result.verdict = HOLDS
    if result.verdict == INCONCLUSIVE:
        short = [p.reason for p in result.pairs if p.reason and p.verdict == INCONCLUSIVE]
        result.reason = "; ".join(dict.fromkeys(short))
    return True


def evaluate_claim(claim: dict, column: str | None, scope: str, published: Published, ours: dict,
                   runs: Path | None = None, seeds: list[int] | None = None) -> ClaimResult:
    result = ClaimResult(claim, column, scope)
    specs = dict(claim["values"])
    if scope == "ours":
        specs.update(claim.get("ours", {}))
    measured = {name: _resolve(_ref(spec, column), scope, published, ours, runs, seeds) for name, spec in specs.items()}
    result.values = {name: m.value for name, m in measured.items()}
    result.sources = {name: m.where for name, m in measured.items()}
    if scope == "ours":
        result.per_seed = {name: m.values for name, m in measured.items()}
        result.n = {name: len(m.values) for name, m in measured.items()}
    missing = [name for name, m in measured.items() if m.value is None]
    if missing:
        result.verdict = NOT_MEASURABLE if scope == "ours" else "not measurable (no published value)"
        result.reason = "missing: " + ", ".join(f"{n} ({result.sources[n]})" for n in missing)
        return result
    if scope == "ours" and _decide_statistically(result, measured, published):
        for name, expression in claim.get("show", {}).items():
            result.derived[name] = evaluate_expression(expression, result.values)
        return result
    if scope == "ours" and claim.get("distinct"):
        by_value: dict = {}
        for name, m in measured.items():
            by_value.setdefault(m.value, []).append((name, m.row))
        same = [names for names in by_value.values() if len({row for _, row in names}) > 1]
        if same:
            result.verdict = NOT_MEASURABLE
            result.reason = ("identical numbers from different rows (the same model at this scale, see "
                             "experiments.yaml): " + "; ".join(" = ".join(n for n, _ in names) for names in same))
            return result
    result.verdict = HOLDS if evaluate_expression(claim["check"], result.values) else FAILS
    for name, expression in claim.get("show", {}).items():
        result.derived[name] = evaluate_expression(expression, result.values)
    return result


def evaluate_claims(claims: list[dict], published: Published, ours: dict, runs: Path | None = None,
                    seeds: list[int] | None = None) -> list[ClaimResult]:
    """Every claim x scope x column. `ours` maps a published cell id to its measured cell dict."""
    results = []
    for i, claim in enumerate(claims):
        for key in ("id", "statement", "values", "check"):
            if key not in claim:
                raise ConfigError(f"claims[{i}]: missing '{key}'")
        for scope in claim.get("scope", ["published"]):
            if scope not in ("published", "ours"):
                raise ConfigError(f"claims[{i}] ({claim['id']}).scope: {scope!r} is not 'published' or 'ours'")
            for column in claim.get("for_each", [None]):
                results.append(evaluate_claim(claim, column, scope, published, ours, runs, seeds))
    return results


def combined_verdict(results: list[ClaimResult]) -> str:
    """fails if any part fails; else inconclusive if any part is; else not measurable if any part is; else holds."""
    verdicts = [r.verdict for r in results]
    if FAILS in verdicts:
        return FAILS
    if INCONCLUSIVE in verdicts:
        return INCONCLUSIVE
    not_measurable = [v for v in verdicts if v.startswith("not measurable")]
    return not_measurable[0] if not_measurable else HOLDS


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _interval_text(iv) -> str:
    if iv is None or iv.effect is None:
        return "—"
    if iv.low is None:
        return f"{iv.effect:+.3g} [no interval]"
    return f"{iv.effect:+.3g} [{iv.low:+.3g}, {iv.high:+.3g}]"


def _pair_text(p: "PairResult") -> str:
    margin = f" {'+' if p.margin >= 0 else '-'} {abs(p.margin):g}" if p.margin else ""
    return f"{p.a} {p.op} {p.b}{margin}"


def statistical_rows(results: list[ClaimResult]) -> list[dict]:
    """One row per (claim, column, pair) of ours: n, effect, interval, published effect, verdict."""
    rows = []
    for r in results:
        if r.scope != "ours":
            continue
        for p in r.pairs:
            iv = p.interval
            rows.append(dict(claim=r.claim["id"], column=r.column or "", pair=_pair_text(p), op=p.op,
                             n_a=r.n.get(p.a, 0), n_b=r.n.get(p.b, 0),
                             effect=None if iv is None else iv.effect, low=None if iv is None else iv.low,
                             high=None if iv is None else iv.high, margin=p.margin,
                             published_effect=p.published_effect, verdict=p.verdict, method=r.method,
                             reason=p.reason))
    return rows


def claims_markdown(results: list[ClaimResult], scale: str) -> str:
    groups: dict[str, list[ClaimResult]] = {}
    for r in results:
        groups.setdefault(r.claim["id"], []).append(r)
    summary = {}
    for claim_id, parts in groups.items():
        for scope in ("published", "ours"):
            scoped = [p for p in parts if p.scope == scope]
            if scoped:
                verdict = combined_verdict(scoped)
                summary[(scope, verdict)] = summary.get((scope, verdict), 0) + 1
    methods = sorted({r.method for r in results if r.scope == "ours" and r.method})
    lines = [f"# Claims of DeepAVFusion, checked (scale `{scale}`)", "",
             "Each claim is checked on the published numbers (do the paper's own numbers support it?) and, "
             f"where it can be measured, on ours at scale `{scale}`. Claims and checks are data: "
             "workflow/config/tables.yaml; published numbers: avfusion/report/published.yaml.", "",
             "Ours is decided with statistics over seeds, pair by pair (an ordering a > b > c is a > b and b > c; "
             "a > max(b, c) is a > b and a > c): effect = difference of the means over seeds, with a 95 % "
             "confidence interval by " + (", ".join(stats.METHOD_TEXT[m] for m in methods) or stats.METHOD_TEXT[DEFAULT_METHOD])
             + " (per claim in the table below). *holds*: the interval excludes 0 (or the claimed margin) "
             "on the claimed side; *fails*: it excludes it on the other side; *inconclusive*: it contains it, "
             "or a side has fewer than 2 seeds; `>=` is decided like `>`. A claim holds when every pair holds and "
             "fails when any pair fails. The published effect is the same difference on the paper's numbers.", "",
             "| scope | verdict | claims |", "|---|---|---|"]
    lines += [f"| {scope} | {verdict} | {n} |" for (scope, verdict), n in sorted(summary.items())]
    lines += ["", "| claim | published | ours |", "|---|---|---|"]
    for claim_id, parts in groups.items():
        cols = []
        for scope in ("published", "ours"):
            scoped = [p for p in parts if p.scope == scope]
            cols.append(combined_verdict(scoped) if scoped else "—")
        lines.append(f"| [{claim_id}](#{claim_id}) | {cols[0]} | {cols[1]} |")
    rows = statistical_rows(results)
    if rows:
        lines += ["", "## Our claims, decided with statistics", "",
                  "| claim | column | pair | n | our effect [95 % CI] | published effect | method | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            iv = stats.Interval(row["effect"], row["low"], row["high"], row["n_a"], row["n_b"], row["method"])
            pub = "—" if row["published_effect"] is None else f"{row['published_effect']:+.3g}"
            verdict = row["verdict"] + (f" ({row['reason']})" if row["reason"] else "")
            lines.append(f"| [{row['claim']}](#{row['claim']}) | {row['column']} | {row['pair']} | "
                         f"{row['n_a']} vs {row['n_b']} | {_interval_text(iv)} | {pub} | {row['method']} | "
                         f"{verdict.replace('|', '/')} |")
    for claim_id, parts in groups.items():
        claim = parts[0].claim
        lines += ["", f"## {claim_id}", "", f"{claim['statement'].replace('{column}', '<column>')}", "",
                  f"Source: {claim.get('source', '')}. Check: `{claim['check']}`.", "",
                  "| scope | column | values | verdict |", "|---|---|---|---|"]
        for p in parts:
            def value_text(n, v):
                if v is None:
                    return f"{n} = missing"
                if p.scope == "ours" and len(p.per_seed.get(n, [])) > 1:
                    return f"{n} = {_fmt(v)} (n={len(p.per_seed[n])}: {', '.join(_fmt(x) for x in p.per_seed[n])})"
                return f"{n} = {_fmt(v)}"

            values = ", ".join(value_text(n, v) for n, v in p.values.items())
            if p.derived:
                values += "; " + ", ".join(f"**{n} = {_fmt(v)}**" for n, v in p.derived.items())
            if p.pairs:
                values += "; " + ", ".join(f"{_pair_text(q)}: {_interval_text(q.interval)} {q.verdict}" for q in p.pairs)
            verdict = p.verdict + (f" ({p.reason})" if p.reason else "")
            lines.append(f"| {p.scope} | {p.column or ''} | {values} | {verdict.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def claim_runs(claims: list[dict], runs: Path, seeds: list[int] | None = None) -> list[str]:
    """The metrics.json files that the `run:` values of the claims (scope ours) read, every seed's."""
    seeds = list(seeds or [0])
    out = set()
    for claim in claims:
        if "ours" not in claim.get("scope", ["published"]):
            continue
        specs = list(claim["values"].values()) + list(claim.get("ours", {}).values())
        for spec in specs:
            refs = spec.values() if isinstance(spec, dict) else [spec]
            for ref in refs:
                for column in claim.get("for_each", [None]):
                    ref_c = ref.format(column=column) if column is not None else ref
                    if ref_c.startswith("run:"):
                        run = ref_c.split(":", 2)[1]
                        out.update(f"{runs / run}{seed_folder(k, seeds)}/metrics.json" for k in seeds)
    return sorted(out)


def write_claims(results: list[ClaimResult], path: Path, scale: str) -> Path:
    return atomic_write_text(path, claims_markdown(results, scale))
