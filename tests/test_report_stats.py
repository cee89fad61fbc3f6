"""Claims decided with statistics: intervals and verdicts on hand-made per-seed numbers, seeds in
tables (mean, std, n), floor rows, and claims.md / the effects figure from per-seed run folders."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from avfusion.report import stats
from avfusion.report.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, claim_runs, evaluate_claims
from avfusion.report.cli import make_claims, make_table
from avfusion.report.published import load_published
from avfusion.report.tables import ScaleContext, build_table, load_tables_config, mean_std, required_runs


# ----------------------------------------------------------------------------- intervals
def test_welch_interval_equals_the_hand_computation():
    # a - b = 5; var 1 and 1; se = sqrt(1/3 + 1/3); Welch df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4; t(0.975, 4) = 2.776445
    iv = stats.interval([10, 11, 12], [5, 6, 7])
    half = 2.7764451051977987 * math.sqrt(2 / 3)
    assert iv.effect == pytest.approx(5.0)
    assert (iv.low, iv.high) == (pytest.approx(5 - half), pytest.approx(5 + half))
    assert (iv.n_a, iv.n_b, iv.method) == (3, 3, "welch")
    assert stats.decide(iv, ">") == HOLDS and stats.decide(iv, "<") == FAILS


def test_welch_with_unequal_variances_uses_satterthwaite_df():
    # var_a = 4 (n 3), var_b = 1/12 (n 4): terms 4/3 and 1/48; df = (4/3 + 1/48)^2 / ((4/3)^2/2 + (1/48)^2/3)
    a, b = [8.0, 10.0, 12.0], [1.0, 1.5, 1.0, 1.5]
    terms = (4 / 3, 1 / 48)
    df = sum(terms) ** 2 / (terms[0] ** 2 / 2 + terms[1] ** 2 / 3)
    from scipy.stats import t, ttest_ind
    half = t.ppf(0.975, df) * math.sqrt(sum(terms))
    iv = stats.interval(a, b)
    assert iv.effect == pytest.approx(10 - 1.25)
    assert iv.high - iv.effect == pytest.approx(half)
    ref = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)     # scipy's Welch interval
    assert (iv.low, iv.high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_overlapping_seeds_are_inconclusive_and_reversed_ones_fail():
    assert stats.decide(stats.interval([10, 11, 12], [9, 11, 13]), ">") == INCONCLUSIVE   # effect 0
    assert stats.decide(stats.interval([1, 2, 3], [10, 11, 12]), ">") == FAILS
    assert stats.decide(stats.interval([30.0, 30.5, 29.5], [29.0, 30.2, 28.6]), ">") == INCONCLUSIVE


def test_one_seed_is_never_decided():
    iv = stats.interval([45.0], [6.25])
    assert iv.effect == pytest.approx(38.75) and iv.low is None and "needs >= 2" in iv.reason
    assert stats.decide(iv, ">") == INCONCLUSIVE
    assert stats.decide(stats.interval([45.0], [6.25], "paired"), ">") == INCONCLUSIVE


def test_constant_floor_reduces_welch_to_a_one_sample_interval():
    # chance 6.25 on every seed (variance 0): df = n_a - 1 = 2, half = t(0.975, 2) * sd / sqrt(3)
    iv = stats.interval([40.0, 42.0, 44.0], [6.25, 6.25, 6.25])
    half = 4.302652729911275 * 2.0 / math.sqrt(3)
    assert (iv.low, iv.high) == (pytest.approx(35.75 - half), pytest.approx(35.75 + half))
    assert stats.decide(stats.interval([1.0, 1.0], [1.0, 1.0]), ">") == INCONCLUSIVE   # a point at 0
    assert stats.decide(stats.interval([2.0, 2.0], [1.0, 1.0]), ">") == HOLDS          # a point at +1


def test_paired_interval_sees_a_consistent_gap_that_welch_does_not():
    # seed-to-seed spread 1.0, within-seed gap 0.5 / 0.6 / 0.7: paired mean 0.6, sd 0.1, df 2
    own, other = [10.5, 11.6, 12.7], [10.0, 11.0, 12.0]
    paired = stats.interval(own, other, "paired")
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert (paired.low, paired.high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    assert stats.decide(paired, ">") == HOLDS
    assert stats.decide(stats.interval(own, other, "welch"), ">") == INCONCLUSIVE


def test_paired_interval_pairs_values_by_seed():
    iv = stats.interval([1.0, 2.0, 3.0], [2.5, 0.5, 1.5], "paired", seeds_a=[0, 1, 2], seeds_b=[2, 0, 1])
    assert iv.effect == pytest.approx(0.5)    # (1 - 0.5) + (2 - 1.5) + (3 - 2.5) over 3


def test_bootstrap_interval_is_scipys_percentile_bootstrap():
    from scipy.stats import bootstrap
    import numpy as np

    a, b = [10.0, 11.0, 12.0, 11.5], [5.0, 6.0, 7.0, 6.5]
    iv = stats.interval(a, b, "bootstrap")
    ref = bootstrap((np.array(a), np.array(b)), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), vectorized=True,
                    method="percentile", n_resamples=9999, rng=np.random.default_rng(0)).confidence_interval
    assert (iv.low, iv.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert 3.0 <= iv.low < iv.effect < iv.high <= 7.0 and stats.decide(iv, ">") == HOLDS


def test_margin_claims_are_non_inferiority():
    # fact >= dense - 0.5: interval of fact - dense = [-0.3, +0.2] lies above -0.5 -> holds
    iv = stats.Interval(-0.05, -0.3, 0.2, 3, 3, "welch")
    assert stats.decide(iv, ">=", -0.5) == HOLDS
    assert stats.decide(stats.Interval(-1.0, -1.4, -0.6, 3, 3, "welch"), ">=", -0.5) == FAILS
    assert stats.decide(stats.Interval(-0.5, -0.9, -0.1, 3, 3, "welch"), ">=", -0.5) == INCONCLUSIVE


def test_checks_become_pairwise_comparisons():
    assert stats.comparisons("early > mid > late > none") == [
        ("early", ">", "mid", 0.0), ("mid", ">", "late", 0.0), ("late", ">", "none", 0.0)]
    assert stats.comparisons("t16 >= max(t1, t8, t32)") == [
        ("t16", ">=", "t1", 0.0), ("t16", ">=", "t8", 0.0), ("t16", ">=", "t32", 0.0)]
    assert stats.comparisons("ours > cav_mae > max(mae, audiomae)") == [
        ("ours", ">", "cav_mae", 0.0), ("cav_mae", ">", "mae", 0.0), ("cav_mae", ">", "audiomae", 0.0)]
    assert stats.comparisons("fact >= dense - 0.5") == [("fact", ">=", "dense", -0.5)]
    assert stats.comparisons("fact_speed > dense_speed and fact_mem < dense_mem") == [
        ("fact_speed", ">", "dense_speed", 0.0), ("fact_mem", "<", "dense_mem", 0.0)]
    for bad in ("max(a, b) > c", "abs(a / b - 3.3) <= 0.1", "a == b", "a > b or c > d"):
        with pytest.raises(ValueError):
            stats.comparisons(bad)


def test_combine_pairs():
    assert stats.combine([HOLDS, HOLDS]) == HOLDS
    assert stats.combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert stats.combine([INCONCLUSIVE, FAILS, HOLDS]) == FAILS


# ----------------------------------------------------------------------------- claims over seeds
def _cell(values, variant, seeds=(0, 1, 2)):
    return {"ours": sum(values) / len(values), "values": list(values), "seeds": list(seeds), "variant": variant,
            "run": f"runs/{variant}", "status": "ok"}


ORDERING = {"id": "order", "statement": "early > mid > late", "check": "early > mid > late",
            "values": {"early": "T4.r1.linear", "mid": "T4.r4.linear", "late": "T4.r5.linear"},
            "distinct": True, "scope": ["published", "ours"]}


def test_an_ordering_is_decided_pair_by_pair():
    published = load_published()
    early, mid = [50.0, 51.0, 52.0], [40.0, 41.0, 42.0]
    cases = {  # late's seeds -> expected verdict of the claim (early > mid holds in every case)
        (30.0, 31.0, 32.0): HOLDS,          # mid > late holds too
        (39.0, 41.0, 43.0): INCONCLUSIVE,   # mid - late = 0
        (60.0, 61.0, 62.0): FAILS,          # mid < late
    }
    for late, expected in cases.items():
        ours = {"T4.r1.linear": _cell(early, "deepavfusion"), "T4.r4.linear": _cell(mid, "mid_fusion"),
                "T4.r5.linear": _cell(list(late), "late_fusion")}
        pub, res = evaluate_claims([ORDERING], published, ours)
        assert pub.verdict == HOLDS                     # 53.08 > 51.21 > 46.52 on the paper's numbers
        assert res.verdict == expected, late
        assert [p.verdict for p in res.pairs][0] == HOLDS
        assert res.pairs[0].interval.effect == pytest.approx(10.0)
        assert res.pairs[0].published_effect == pytest.approx(53.08 - 51.21)
        assert res.n == {"early": 3, "mid": 3, "late": 3} and res.method == "welch"


def test_identical_seeds_of_two_rows_are_not_measurable_but_other_pairs_still_decide():
    published = load_published()
    same = [40.0, 41.0, 42.0]
    ours = {"T4.r1.linear": _cell([50.0, 51.0, 52.0], "deepavfusion"), "T4.r4.linear": _cell(same, "fusion_layers_3"),
            "T4.r5.linear": _cell(same, "fusion_layers_1")}
    (_, res) = evaluate_claims([ORDERING], published, ours)
    assert [p.verdict for p in res.pairs] == [HOLDS, NOT_MEASURABLE]
    assert res.verdict == NOT_MEASURABLE and "same model" in res.reason


def _write_runs(root: Path, task: str, variant: str, per_seed: dict[int, dict]) -> None:
    for seed, metrics in per_seed.items():
        folder = root / task / variant / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({"metrics": metrics, "provenance": {"seed": seed}}))


FLOOR_TABLES = """
datasets:
  vggsound_all: {paper: vggsound, tiny: tuxav}
  vggsound_music: {paper: vggsound_music, tiny: tuxav}
tables:
  table4:
    title: "Table 4 (test subset)"
    columns:
      linear:  {task: linprobe, metric: acc_all, dataset: vggsound_all}
      sep_sdr: {task: separation, metric: sdr, dataset: vggsound_music}
    rows:
      - {published: T4.r1, variant: deepavfusion}
      - {published: T4.r5, variant: late_fusion}
      - {published: null, floor: true, label: "chance", variant: deepavfusion, columns: [linear], metrics: {linear: chance_acc_all}}
      - {published: null, floor: true, label: "mixture as estimate", variant: deepavfusion, columns: [sep_sdr], metrics: {sep_sdr: sdr_mix}}
claims:
  - id: early_beats_late
    statement: "early > late on {column}"
    for_each: [linear, sep_sdr]
    values: {early: "T4.r1.{column}", late: "T4.r5.{column}"}
    check: "early > late"
    scope: [published, ours]
  - id: floor_mixture
    statement: "separation beats the mixture"
    values: {model: "run:separation/deepavfusion:sdr", mixture: "run:separation/deepavfusion:sdr_mix"}
    check: "model > mixture"
    stats: paired
    scope: [ours]
"""


@pytest.fixture
def seeded(tmp_path):
    (tmp_path / "tables.yaml").write_text(FLOOR_TABLES)
    cfg = load_tables_config(tmp_path / "tables.yaml")
    runs = tmp_path / "runs"
    _write_runs(runs, "linprobe", "deepavfusion", {0: {"acc_all": 44.0, "chance_acc_all": 6.25},
                                                   1: {"acc_all": 46.0, "chance_acc_all": 6.25},
                                                   2: {"acc_all": 45.0, "chance_acc_all": 6.25}})
    _write_runs(runs, "linprobe", "late_fusion", {0: {"acc_all": 45.5}, 1: {"acc_all": 44.5}, 2: {"acc_all": 46.5}})
    _write_runs(runs, "separation", "deepavfusion", {0: {"sdr": 2.5, "sdr_mix": 0.2}, 1: {"sdr": 1.1, "sdr_mix": 0.3},
                                                     2: {"sdr": 3.0, "sdr_mix": 0.25}})
    _write_runs(runs, "separation", "late_fusion", {0: {"sdr": 0.5}, 1: {"sdr": 0.7}})   # seed 2 missing
    ctx = ScaleContext("tiny", {"linprobe": ["tuxav"], "separation": ["tuxav"]}, {}, [0, 1, 2])
    return cfg, runs, ctx, tmp_path


def test_table_cells_are_mean_std_n_over_seed_folders_with_floor_rows(seeded):
    cfg, runs, ctx, _ = seeded
    cells = {(c["row"], c["column_id"]): c for c in build_table(cfg, "table4", runs, ctx, load_published())}
    lin = next(c for k, c in cells.items() if k[1] == "linear" and c["variant"] == "deepavfusion" and not c["floor"])
    assert (lin["ours"], lin["std"], lin["n"], lin["values"], lin["status"]) == (45.0, 1.0, 3, [44.0, 46.0, 45.0], "ok")
    assert lin["run"].endswith("linprobe/deepavfusion/seed{k}/metrics.json")
    chance = cells[("chance", "linear")]
    assert (chance["ours"], chance["std"], chance["n"], chance["metric"]) == (6.25, 0.0, 3, "chance_acc_all")
    assert cells[("chance", "sep_sdr")]["status"] == "n/a" and cells[("chance", "sep_sdr")]["ours"] is None
    assert cells[("mixture as estimate", "sep_sdr")]["ours"] == pytest.approx(0.25)
    late_sep = next(c for k, c in cells.items() if k[1] == "sep_sdr" and c["variant"] == "late_fusion")
    assert late_sep["n"] == 2 and late_sep["status"] == "missing run seed 2" and late_sep["ours"] == pytest.approx(0.6)
    assert mean_std([1.0]) == (1.0, None) and mean_std([]) == (None, None)
    paths = required_runs(cfg, "table4", runs, ctx)
    assert len(paths) == 2 * 2 * 3     # 2 variants x 2 tasks x 3 seeds (floor rows read the same runs)
    assert str(runs / "separation/late_fusion/seed2/metrics.json") in paths


def test_table_markdown_and_csv_show_mean_std_n(seeded):
    cfg, runs, ctx, tmp_path = seeded
    csv_path, md_path = make_table(cfg, "table4", runs, tmp_path / "out", ctx)[:2]
    md = md_path.read_text()
    assert "| *floor*: chance | 6.25 ± 0.00 (n=3) / — | · |" in md
    assert "45.00 ± 1.00 (n=3) / 53.08" in md
    import csv
    rows = list(csv.DictReader(open(csv_path)))
    first = rows[0]
    assert (first["ours"], first["std"], first["n"], first["seeds"], first["values"]) == ("45", "1", "3", "0;1;2", "44;46;45")


def test_claims_over_seed_folders_give_effect_interval_and_verdict(seeded):
    cfg, runs, ctx, tmp_path = seeded
    text = make_claims(cfg, runs, tmp_path / "out", ctx).read_text()
    # linear: early 45 +- 1 vs late 45.5 +- 1: inconclusive; sep: late has 2 seeds -> still an interval
    # floor_mixture (paired): diffs 2.3, 0.8, 2.75 -> mean 1.95, sd 1.0210, half 4.3027 * 1.0210 / sqrt(3) = 2.536
    assert "| [floor_mixture](#floor_mixture) |  | model > mixture | 3 vs 3 | +1.95 [-0.586, +4.49] | — | paired | inconclusive |" in text
    assert "| [early_beats_late](#early_beats_late) | linear | early > late | 3 vs 3 | -0.5" in text
    assert "Welch t interval" in text and "paired t interval" in text
    assert (tmp_path / "out/figures/claims_effects.png").read_bytes()[:4] == b"\x89PNG"
    assert claim_runs(cfg["claims"], runs, [0, 1, 2]) == [str(runs / f"separation/deepavfusion/seed{k}/metrics.json")
                                                          for k in (0, 1, 2)]
