"""The report: tables from fixture metrics equal hand-written tables; claims hold / fail / are not measurable."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from avfusion.config import ConfigError
from avfusion.report.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURABLE, evaluate_claims, evaluate_expression
from avfusion.report.cli import make_claims, make_table
from avfusion.report.published import PublishedError, load_published
from avfusion.report.tables import build_table, load_tables_config, required_runs, scale_context

FIXTURES = Path(__file__).parent / "fixtures" / "report"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fixture_cfg(monkeypatch):
    monkeypatch.chdir(FIXTURES)  # run paths in the expected CSV are relative to the fixture folder
    cfg = load_tables_config(FIXTURES / "tables.yaml")
    return cfg, scale_context(cfg, "smoke")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_from_fixture_metrics_equals_expected_table(fixture_cfg, tmp_path):
    cfg, ctx = fixture_cfg
    csv_path, md_path = make_table(cfg, "table4", Path("runs/smoke"), tmp_path, ctx)[:2]
    assert read_csv(csv_path) == read_csv(FIXTURES / "expected_table4.csv")
    markdown = md_path.read_text()
    assert "| (5) PT ✓, Late, Local ✓ | 18.00 / 46.52 | missing / 5.32 | 41.50 / 44.32 |" in markdown
    assert "| (2) PT ✗, Early, Local ✓ | quoted / 44.36 | quoted / 2.03 | quoted / 29.55 |" in markdown


def test_missing_cells_are_never_zero(fixture_cfg):
    cfg, ctx = fixture_cfg
    cells = build_table(cfg, "table4", Path("runs/smoke"), ctx, load_published())
    missing = [c for c in cells if c["status"] != "ok"]
    assert len(missing) == 6 and all(c["ours"] is None and c["delta"] is None for c in missing)


def test_required_runs_are_the_cells_runs_with_dataset_suffix(fixture_cfg):
    cfg, ctx = fixture_cfg
    runs = required_runs(cfg, "table4", Path("runs/smoke"), ctx)
    assert len(runs) == 9  # 3 variants x 3 columns; the quoted-only row needs none
    assert "runs/smoke/segmentation/deepavfusion@avss_mini/metrics.json" in runs
    assert "runs/smoke/linprobe/deepavfusion/metrics.json" in runs


def test_claims_on_fixture_numbers_hold_fail_or_are_not_measurable(fixture_cfg):
    cfg, ctx = fixture_cfg
    published = load_published()
    cells = build_table(cfg, "table4", Path("runs/smoke"), ctx, published)
    ours = {c["published_id"]: c for c in cells if c["variant"]}
    verdicts = {(r.claim["id"], r.scope): r for r in evaluate_claims(cfg["claims"], published, ours)}
    # issue 15: ours is decided on a 95 % interval over seeds; one seed per side gives no interval, so
    # 20.5 vs 18.0 and 40.0 vs 41.5 are inconclusive (they held / failed on the point values before)
    assert verdicts[("early_beats_late_linear", "ours")].verdict == INCONCLUSIVE
    assert verdicts[("early_beats_late_linear", "ours")].pairs[0].interval.effect == pytest.approx(2.5)
    assert verdicts[("early_beats_late_segm", "ours")].verdict == INCONCLUSIVE
    assert "needs >= 2 values per side" in verdicts[("early_beats_late_segm", "ours")].reason
    assert verdicts[("early_beats_late_segm", "published")].verdict == HOLDS       # 52.05 > 44.32
    assert verdicts[("early_beats_late_sep", "ours")].verdict == NOT_MEASURABLE    # late_fusion separation run missing
    gap = verdicts[("gap_ratio", "published")]
    assert gap.verdict == HOLDS and gap.derived["ratio"] == pytest.approx((53.08 - 39.67) / (53.08 - 46.52))


def test_claims_markdown_lists_every_claim_with_numbers(fixture_cfg, tmp_path):
    cfg, ctx = fixture_cfg
    text = make_claims(cfg, Path("runs/smoke"), tmp_path, ctx).read_text()
    for claim in cfg["claims"]:
        assert f"## {claim['id']}" in text
    assert "| ours |  | early = 40, late = 41.5; early > late: -1.5 [no interval] inconclusive | inconclusive" in text


def test_identical_numbers_of_two_rows_are_not_measurable():
    published = load_published()
    claim = {"id": "x", "statement": "s", "values": {"a": "T4.r1.linear", "b": "T4.r5.linear"},
             "check": "a > b", "distinct": True, "scope": ["ours"]}
    ours = {"T4.r1.linear": {"ours": 30.0, "variant": "fusion_layers_3", "run": "p"},
            "T4.r5.linear": {"ours": 30.0, "variant": "fusion_layers_1", "run": "q"}}
    (result,) = evaluate_claims([claim], published, ours)
    assert result.verdict == NOT_MEASURABLE and "same model" in result.reason


def test_check_expressions_are_a_small_safe_language():
    assert evaluate_expression("a > b > c", {"a": 3, "b": 2, "c": 1}) is True
    assert evaluate_expression("abs(a / b - 3.3) <= 0.1", {"a": 14.5, "b": 4.3}) is True
    assert evaluate_expression("x == y", {"x": "MSE", "y": "BCE"}) is False
    with pytest.raises(ConfigError, match="not allowed"):
        evaluate_expression("__import__('os').system('true')", {})
    with pytest.raises(ConfigError, match="unknown name 'z'"):
        evaluate_expression("z > 1", {"a": 1})


def test_published_values_carry_their_source():
    published = load_published()
    assert published.value("T1.oneavm.vggmusic_sdr") == 3.67
    assert "Table 1" in published.source("T1.oneavm.vggmusic_sdr") and "OneAVM" in published.source("T1.oneavm.vggmusic_sdr")
    assert published.value("T2.lavish.s4_f1") is None  # "—" in the paper
    with pytest.raises(PublishedError, match="no published value 'T4.r9.linear'"):
        published.value("T4.r9.linear")


def test_repository_tables_yaml_is_consistent_and_spec8_items_fail_on_published_numbers(tmp_path):
    cfg = load_tables_config(REPO / "workflow" / "config" / "tables.yaml")
    ctx = scale_context(cfg, "tiny")
    published = load_published()
    for table_id in cfg["tables"]:  # every cell resolves (published ids exist), every run is missing here
        cells = build_table(cfg, table_id, tmp_path / "runs", ctx, published)
        assert all(c["ours"] is None for c in cells)
    results = evaluate_claims(cfg["claims"], published, {}, tmp_path / "runs")
    verdict = {r.claim["id"]: r.verdict for r in results if r.scope == "published" and r.column is None}
    spec8 = [k for k in verdict if k.startswith("spec8_")]
    assert len(spec8) >= 16
    assert verdict["spec8_04b_table5_baseline_is_late_fusion"] == HOLDS
    assert all(verdict[k] == FAILS for k in spec8 if k != "spec8_04b_table5_baseline_is_late_fusion")
    assert verdict["text_gain_oneavm"] == HOLDS and verdict["t5_dense_slowdown_quoted"] == HOLDS


def test_bad_tables_yaml_names_the_key(tmp_path):
    bad = tmp_path / "tables.yaml"
    bad.write_text("datasets: {}\ntables:\n  t:\n    title: x\n    columns: {c: {task: nonsense, metric: m}}\n    rows: []\n")
    with pytest.raises(ConfigError, match=r"tables\.t\.columns\.c\.task"):
        load_tables_config(bad)


def _numbers(line: str) -> list[float]:
    out = []
    for token in line.split("|"):
        try:
            out.append(float(token.strip()))
        except ValueError:
            pass
    return out


def test_every_published_table_number_is_in_the_paper_text(testdata):
    """Each row of published.yaml tables appears, in column order, as a row of the paper's tables."""
    paper = (testdata.parent / "paper" / "deepavfusion_cvpr2024.txt").read_text()
    rows = [_numbers(line) for line in paper.splitlines() if line.startswith("|")]
    published = load_published()
    checked = 0
    for table_id, table in published.tables.items():
        for row_id, row in table["rows"].items():
            values = [v for v in (row["values"].get(c) for c in table["columns"]) if v is not None]
            found = any(any(r[i:i + len(values)] == values for i in range(len(r) - len(values) + 1)) for r in rows)
            assert found, f"{table_id}.{row_id}: {values} is not a row of the paper's tables"
            checked += len(values)
    assert checked == 63 + 11 + 16 + 18 + 15 + 24 + 16 + 12 + 10  # every number of Tables 1-7 (T6 with its '#')
    for key in ("gain_oneavm_sdr", "gain_oneavm_sir", "gain_mae_vggmusic", "gain_audiomae_vggmusic",
                "gain_mae_all", "gain_audiomae_all", "dense_slowdown", "dense_memory", "pair_reduction"):
        assert f"{published.value('text.' + key)}" in paper, key
