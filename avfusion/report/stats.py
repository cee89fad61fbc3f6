"""Claims decided with statistics over seeds: effect, 95 % interval, verdict.

    iv = interval([31.2, 30.8, 32.0], [28.1, 29.0, 27.7])            # Welch t interval (default)
    iv.effect, iv.low, iv.high                                        # mean(a) - mean(b) and its interval
    decide(iv, ">")                                                   # holds / fails / inconclusive
    pairs = comparisons("early > mid > late")                         # [('early', '>', 'mid', 0.0), ...]

A comparison `a > b` (or `a > b + margin`) is decided on the interval of mean(a) - mean(b):
*holds* when the whole interval lies on the claimed side of the margin, *fails* when it lies on
the other side, *inconclusive* otherwise (or when a side has fewer than 2 values and no exact
zero-variance case makes the interval a point). `>=` is decided like `>` (no equivalence margin is
claimed). An ordering a > b > c is decided pair by pair (a > b, b > c); a claim holds when every
pair holds, fails when any pair fails, and is inconclusive otherwise.

Methods (the `method` argument; claims.md names the one used):
- `welch` (default): Welch's unequal-variance t interval for a difference of two independent means
  (Welch-Satterthwaite degrees of freedom). With 3 seeds per side it is wide: t(0.975, ~2-4 df).
- `paired`: a t interval on the per-seed differences a_k - b_k (both values from the same seed's
  run, e.g. a model and its own trivial reference evaluated on the same clips).
- `bootstrap`: scipy.stats.bootstrap percentile interval of mean(a) - mean(b), resampling the seeds
  of each side independently (9999 resamples, fixed random state). With 3 seeds it is narrower
  than the t intervals (a bootstrap cannot see beyond the seeds it has); offered for larger n.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass

import numpy as np

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
METHODS = ("welch", "paired", "bootstrap")
METHOD_TEXT = {
    "welch": "Welch t interval (difference of two independent means, Welch-Satterthwaite df)",
    "paired": "paired t interval over seeds (per-seed differences, n - 1 df)",
    "bootstrap": "percentile bootstrap over seeds (scipy.stats.bootstrap, 9999 resamples)",
}


@dataclass
class Interval:
    effect: float | None          # mean(a) - mean(b)
    low: float | None             # None: no interval (too few values)
    high: float | None
    n_a: int
    n_b: int
    method: str
    confidence: float = 0.95
    reason: str = ""


def _mean(x) -> float:
    return float(np.mean(np.asarray(x, dtype=float)))


def _var(x) -> float:
    return float(np.var(np.asarray(x, dtype=float), ddof=1)) if len(x) > 1 else float("nan")


def _t_quantile(confidence: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def interval(a, b, method: str = "welch", confidence: float = 0.95, seeds_a=None, seeds_b=None,
             random_state: int = 0) -> Interval:
    """The `confidence` interval of mean(a) - mean(b) by `method` (see the module docstring)."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    if not a or not b:
        return Interval(None, None, None, len(a), len(b), method, confidence, "no values")
    effect = _mean(a) - _mean(b)
    out = Interval(effect, None, None, len(a), len(b), method, confidence)
    if method == "paired":
        if seeds_a is not None and seeds_b is not None:
            common = [s for s in seeds_a if s in set(seeds_b)]
            a = [a[list(seeds_a).index(s)] for s in common]
            b = [b[list(seeds_b).index(s)] for s in common]
        if len(a) != len(b):
            raise ValueError(f"paired interval: {len(a)} vs {len(b)} values (pair them by seed)")
        diff = np.asarray(a) - np.asarray(b)
        out.effect, out.n_a, out.n_b = float(diff.mean()), len(diff), len(diff)
        if len(diff) < 2:
            out.reason = f"n = {len(diff)} pair: no interval"
            return out
        sd = float(diff.std(ddof=1))
        half = 0.0 if sd == 0 else _t_quantile(confidence, len(diff) - 1) * sd / math.sqrt(len(diff))
        out.low, out.high = out.effect - half, out.effect + half
        return out
    if method == "bootstrap":
        if len(a) < 2 or len(b) < 2:
            out.reason = f"n = {len(a)} vs {len(b)}: a bootstrap needs >= 2 values per side"
            return out
        from scipy.stats import bootstrap

        def stat(x, y, axis=-1):
            return np.mean(x, axis=axis) - np.mean(y, axis=axis)

        if np.ptp(a) == 0 and np.ptp(b) == 0:
            out.low = out.high = effect
            return out
        res = bootstrap((np.asarray(a), np.asarray(b)), stat, confidence_level=confidence, n_resamples=9999,
                        method="percentile", vectorized=True, rng=np.random.default_rng(random_state))
        out.low, out.high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return out
    # welch
    va = _var(a) if len(a) > 1 else None
    vb = _var(b) if len(b) > 1 else None
    if va is None or vb is None:
        # one side with a single value: only a constant other side... still no variance for it
        out.reason = f"n = {len(a)} vs {len(b)}: a t interval needs >= 2 values per side"
        return out
    se2 = va / len(a) + vb / len(b)
    if se2 == 0:
        out.low = out.high = effect
        return out
    terms = [v / n for v, n in ((va, len(a)), (vb, len(b)))]
    df = se2 ** 2 / sum(term ** 2 / (n - 1) for term, n in zip(terms, (len(a), len(b))) if term > 0)
    half = _t_quantile(confidence, df) * math.sqrt(se2)
    out.low, out.high = effect - half, effect + half
    return out


def decide(iv: Interval, direction: str = ">", margin: float = 0.0) -> str:
    """The verdict of the claim `a <direction> b + margin` on the interval of a - b."""
    if iv.low is None or iv.high is None:
        return INCONCLUSIVE
    if direction in (">", ">="):
        return HOLDS if iv.low > margin else FAILS if iv.high < margin else INCONCLUSIVE
    if direction in ("<", "<="):
        return HOLDS if iv.high < margin else FAILS if iv.low > margin else INCONCLUSIVE
    raise ValueError(f"direction {direction!r}: one of > >= < <=")


def combine(verdicts: list[str]) -> str:
    """Every part holds -> holds; any part fails -> fails; otherwise inconclusive."""
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if FAILS in verdicts:
        return FAILS
    return INCONCLUSIVE


# ----------------------------------------------------------------------------- check -> pairs
_OPS = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<="}


def _operand(node, expression: str) -> tuple[str, list[str], float]:
    """An operand -> (aggregate 'one' | 'max' | 'min', names, additive constant)."""
    if isinstance(node, ast.Name):
        return "one", [node.id], 0.0
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "min") \
            and all(isinstance(a, ast.Name) for a in node.args) and not node.keywords:
        return node.func.id, [a.id for a in node.args], 0.0
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) \
            and isinstance(node.right, ast.Constant) and isinstance(node.right.value, (int, float)):
        kind, names, const = _operand(node.left, expression)
        sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
        return kind, names, const + sign * float(node.right.value)
    raise ValueError(f"check {expression!r}: {ast.unparse(node)!r} is not a name, max/min of names, or name +- constant")


def comparisons(expression: str) -> list[tuple[str, str, str, float]]:
    """Pairwise comparisons (a, op, b, margin) meaning `a op b + margin` that together make the check.

    'a > b > c' -> a > b, b > c; 'a > max(b, c)' -> a > b, a > c; 'a < min(b, c)' likewise;
    'a >= b - 0.5' -> (a, '>=', b, -0.5); 'x > y and u < v' -> both. Anything else raises ValueError
    (such a claim is decided on the point values only)."""
    tree = ast.parse(expression, mode="eval").body
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    out = []
    for part in parts:
        if not isinstance(part, ast.Compare) or not all(type(op) in _OPS for op in part.ops):
            raise ValueError(f"check {expression!r}: {ast.unparse(part)!r} is not a chain of < <= > >=")
        nodes = [part.left, *part.comparators]
        for op, left, right in zip(part.ops, nodes, nodes[1:]):
            symbol = _OPS[type(op)]
            lk, lnames, lc = _operand(left, expression)
            rk, rnames, rc = _operand(right, expression)
            greater_left = symbol in (">", ">=")
            # 'a > max(b, c)' expands; 'max(a, b) > c' would need an 'or': not a conjunction of pairs
            if (lk == "max" and greater_left) or (lk == "min" and not greater_left) or \
                    (rk == "min" and greater_left) or (rk == "max" and not greater_left):
                raise ValueError(f"check {expression!r}: {ast.unparse(part)!r} is a disjunction, not pairs")
            for a in lnames:
                for b in rnames:
                    out.append((a, symbol, b, rc - lc))
    return out
