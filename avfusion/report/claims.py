"""claims.md: every claim of tables.yaml checked on the published numbers and on ours.

    results = evaluate_claims(cfg["claims"], published, ours)   # ours: published id -> measured cell
    write_claims(results, Path("results/claims.md"), scale="tiny")

A claim names values (published ids, or `run:<task>/<variant>:<metric>`) and a check expression
over them. The expression is evaluated by a small whitelist interpreter (comparisons, arithmetic,
and/or/not, abs/min/max/round): a claim is data, never code.
"""
from __future__ import annotations

import ast
import json
import operator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError
from ..io import atomic_write_text
from .published import Published

HOLDS, FAILS, NOT_MEASURABLE = "holds", "fails", "not measurable at this scale"
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


def _ref(spec, column: str | None) -> str:
    if isinstance(spec, dict):
        if column not in spec:
            raise ConfigError(f"value {spec}: no entry for column {column!r}")
        return spec[column]
    return spec.format(column=column) if column is not None else spec


def _resolve(ref: str, scope: str, published: Published, ours: dict, runs: Path | None) -> MeasuredValue:
    if ref.startswith("run:"):
        if scope == "published":
            raise ConfigError(f"value {ref!r}: a run value cannot be used in the published scope")
        _, run, metric = ref.split(":", 2)
        path = (runs / run / "metrics.json") if runs is not None else Path(run) / "metrics.json"
        if not path.exists():
            return MeasuredValue(None, f"{path} (missing run)")
        metrics = json.loads(path.read_text()).get("metrics", {})
        return MeasuredValue(metrics.get(metric), f"{path}:{metric}", row=run)
    if ref not in published:
        published.value(ref)  # raises, naming the id
    if scope == "published" or ref.split(".")[0] in ("text", "readme", "facts"):
        return MeasuredValue(published.value(ref), published.source(ref))
    cell = ours.get(ref)
    if cell is None:
        return MeasuredValue(None, f"no table cell measures {ref}")
    return MeasuredValue(cell.get("ours"), cell.get("run") or cell.get("status", ""), row=cell.get("variant", ""))


def evaluate_claim(claim: dict, column: str | None, scope: str, published: Published, ours: dict,
                   runs: Path | None = None) -> ClaimResult:
    result = ClaimResult(claim, column, scope)
    specs = dict(claim["values"])
    if scope == "ours":
        specs.update(claim.get("ours", {}))
    measured = {name: _resolve(_ref(spec, column), scope, published, ours, runs) for name, spec in specs.items()}
    result.values = {name: m.value for name, m in measured.items()}
    result.sources = {name: m.where for name, m in measured.items()}
    missing = [name for name, m in measured.items() if m.value is None]
    if missing:
        result.verdict = NOT_MEASURABLE if scope == "ours" else "not measurable (no published value)"
        result.reason = "missing: " + ", ".join(f"{n} ({result.sources[n]})" for n in missing)
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


def evaluate_claims(claims: list[dict], published: Published, ours: dict, runs: Path | None = None) -> list[ClaimResult]:
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
                results.append(evaluate_claim(claim, column, scope, published, ours, runs))
    return results


def combined_verdict(results: list[ClaimResult]) -> str:
    """fails if any part fails; else not measurable if any part is; else holds."""
    verdicts = [r.verdict for r in results]
    if FAILS in verdicts:
        return FAILS
    not_measurable = [v for v in verdicts if v.startswith("not measurable")]
    return not_measurable[0] if not_measurable else HOLDS


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
    lines = [f"# Claims of DeepAVFusion, checked (scale `{scale}`)", "",
             "Each claim is checked on the published numbers (do the paper's own numbers support it?) and, "
             f"where it can be measured, on ours at scale `{scale}`. Claims and checks are data: "
             "workflow/config/tables.yaml; published numbers: avfusion/report/published.yaml.", "",
             "| scope | verdict | claims |", "|---|---|---|"]
    lines += [f"| {scope} | {verdict} | {n} |" for (scope, verdict), n in sorted(summary.items())]
    lines += ["", "| claim | published | ours |", "|---|---|---|"]
    for claim_id, parts in groups.items():
        cols = []
        for scope in ("published", "ours"):
            scoped = [p for p in parts if p.scope == scope]
            cols.append(combined_verdict(scoped) if scoped else "—")
        lines.append(f"| [{claim_id}](#{claim_id}) | {cols[0]} | {cols[1]} |")
    for claim_id, parts in groups.items():
        claim = parts[0].claim
        lines += ["", f"## {claim_id}", "", f"{claim['statement'].replace('{column}', '<column>')}", "",
                  f"Source: {claim.get('source', '')}. Check: `{claim['check']}`.", "",
                  "| scope | column | values | verdict |", "|---|---|---|---|"]
        for p in parts:
            values = ", ".join(f"{n} = {_fmt(v) if v is not None else 'missing'}" for n, v in p.values.items())
            if p.derived:
                values += "; " + ", ".join(f"**{n} = {_fmt(v)}**" for n, v in p.derived.items())
            verdict = p.verdict + (f" ({p.reason})" if p.reason else "")
            lines.append(f"| {p.scope} | {p.column or ''} | {values} | {verdict.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_claims(results: list[ClaimResult], path: Path, scale: str) -> Path:
    return atomic_write_text(path, claims_markdown(results, scale))
