"""Efficiency task (Table 5 speed/memory), the CPU peak-memory method, dense fast == naive through
the whole encoder, every attention through F.scaled_dot_product_attention, and the two benchmark
scripts at smoke size."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from avfusion.config import ConfigError, load_config
from avfusion.models.registry import build_encoder, build_pretrain_model
from avfusion.tasks import efficiency

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# the efficiency task


@pytest.mark.parametrize("dtype", ["float32", "bf16"])
def test_efficiency_task_writes_positive_metrics_at_smoke_size(tmp_path, dtype):
    torch.set_num_threads(1)
    cfg = load_config(efficiency.Config, overrides=["model.preset=deepavfusion-smoke", "batch_size=2",
                                                    "warmup=1", "iters=3", "device=cpu", f"dtype={dtype}"])
    efficiency.run(cfg, tmp_path)
    payload = json.loads((tmp_path / "metrics.json").read_text())
    m = payload["metrics"]
    encoder = build_encoder({"preset": "deepavfusion-smoke"})
    n_params = sum(p.numel() for p in encoder.parameters())
    assert m["params_m"] == pytest.approx(n_params / 1e6)
    assert m["clips_per_s"] > 0 and m["clips_per_s"] == pytest.approx(2 / m["iter_s_median"])
    assert m["iter_s_min"] <= m["iter_s_median"] <= m["iter_s_max"]
    # peak >= weights + inputs, and the forward adds activations on top of them
    inputs_bytes = 2 * (3 * 64 * 64 + 128 * 192) * 4
    assert m["peak_mem_gb"] * 2**30 > n_params * 4 + inputs_bytes
    assert m["peak_mem_gb"] < 1.0
    assert m["gflops_per_clip"] > 0 and (m["n_image_tokens"], m["n_audio_tokens"]) == (16, 96)
    assert m["dtype"] == dtype and payload["config"]["model"] == {"preset": "deepavfusion-smoke"}
    machine = payload["provenance"]["machine"]
    assert machine["device"] == "cpu" and machine["torch_threads"] == 1 and machine["cpu_cores"] >= 1
    with open(tmp_path / "iters.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["phase"] for r in rows] == ["warmup", "timed", "timed", "timed"]
    assert all(float(r["seconds"]) > 0 for r in rows)


def test_efficiency_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="dtype"):
        load_config(efficiency.Config, overrides=["dtype=fp8"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(efficiency.Config, overrides=["batch_size=0"]).validate()


def test_cpu_peak_memory_is_the_running_maximum_of_allocations():
    def work():
        a = torch.empty(10_000_000, dtype=torch.uint8)      # +10 MB
        b = torch.empty(5_000_000, dtype=torch.uint8)       # +5 MB -> 15 MB live
        del a                                               # -10 MB -> 5 MB live
        c = torch.empty(8_000_000, dtype=torch.uint8)       # +8 MB -> 13 MB live (< 15)
        del b, c

    assert efficiency.cpu_peak_bytes_of(work) == 15_000_000

    def matmul():   # output 1000 x 1000 float32 = 4 MB is the only allocation
        return x @ x

    x = torch.randn(1000, 1000)
    assert efficiency.cpu_peak_bytes_of(matmul) == 4_000_000


# ---------------------------------------------------------------------------------------------
# dense interactions: the exact fast identity through the whole encoder


def test_dense_fast_equals_naive_through_the_whole_encoder_float32():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    naive = build_encoder({"preset": "deepavfusion-smoke", "fusion": {"arch": "dense", "dense_impl": "naive"}}).eval()
    with torch.no_grad():   # random values everywhere so that no block is trivially zero
        for name, p in naive.named_parameters():
            if "fusion" in name:
                p.normal_(0, 0.3)
    fast = build_encoder({"preset": "deepavfusion-smoke", "fusion": {"arch": "dense", "dense_impl": "fast"}}).eval()
    fast.load_state_dict(naive.state_dict(), strict=True)
    image, audio = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 128, 192)
    with torch.inference_mode():
        ref = naive(image, audio, return_embs=True)
        got = fast(image, audio, return_embs=True)
    for a, b in zip((ref.image, ref.audio, ref.fusion), (got.image, got.audio, got.fusion)):
        assert ((a - b).norm() / b.norm()).item() < 1e-5
    # the fusion tokens really change along the layers (the dense blocks do work)
    first, last = ref.layers[0][2], ref.layers[-1][2]
    assert (first - naive.fusion_tokens).abs().max() > 0.1 and (last - first).abs().max() > 0.1


# ---------------------------------------------------------------------------------------------
# every attention goes through F.scaled_dot_product_attention


class _PythonTorchCalls(TorchFunctionMode):
    """Names of the torch functions/methods called from Python (SDPA's own C++ internals are not seen)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _count_sdpa(monkeypatch, fn) -> tuple[int, set]:
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    ops = _PythonTorchCalls()
    with torch.no_grad(), ops:
        fn()
    monkeypatch.setattr(F, "scaled_dot_product_attention", real)
    return len(calls), ops.names


# Python-level calls that would mean an attention written by hand
HAND_ATTENTION = {"softmax", "softmax_", "log_softmax", "matmul", "__matmul__", "bmm", "baddbmm"}

# (arch, dense_impl) -> SDPA calls per fusion block
PER_FUSION_BLOCK = {("factorized", "fast"): 4, ("dense", "naive"): 1, ("dense", "fast"): 2, ("token", "fast"): 1}


@pytest.mark.parametrize("arch,impl", list(PER_FUSION_BLOCK))
@pytest.mark.parametrize("layers", ["all", "none", 1])
def test_every_encoder_attention_calls_sdpa(monkeypatch, arch, impl, layers):
    torch.set_num_threads(1)
    section = {"preset": "deepavfusion-smoke", "fusion": {"arch": arch, "dense_impl": impl, "layers": layers}}
    encoder = build_encoder(section).eval()   # depth 2
    n_fusion = {"all": 2, "none": 0, 1: 1}[layers]
    image, audio = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 128, 192)
    count, ops = _count_sdpa(monkeypatch, lambda: encoder(image, audio))
    assert count == 2 * 2 + n_fusion * PER_FUSION_BLOCK[(arch, impl)]   # 2 branches x 2 ViT blocks + fusion
    assert "scaled_dot_product_attention" in ops and not ops & HAND_ATTENTION


def test_pretraining_model_attention_calls_sdpa_encoder_and_decoders(monkeypatch):
    torch.set_num_threads(1)
    model = build_pretrain_model({"preset": "deepavfusion-smoke"}).eval()   # depth 2, decoder depth 1
    image, audio = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 128, 192)
    count, ops = _count_sdpa(monkeypatch, lambda: model(image, audio))
    assert count == 2 * 2 + 2 * 4 + 2 * 1   # branches, factorized blocks (2 aggregation + 2 pair halves), decoders
    assert not ops & HAND_ATTENTION


# ---------------------------------------------------------------------------------------------
# benchmark scripts run end to end at smoke size


def test_encoder_throughput_benchmark_writes_every_setting(tmp_path):
    torch.set_num_threads(1)
    bench = _load_script("encoder_throughput")
    out = tmp_path / "bench.csv"
    assert bench.main(["--preset", "deepavfusion-smoke", "--warmup", "0", "--iters", "1", "--threads", "1",
                       "--out", str(out)]) == 0
    with open(out) as fh:
        rows = {r["setting"]: r for r in csv.DictReader(fh)}
    assert list(rows) == list(bench.SETTINGS)
    for row in rows.values():
        assert float(row["clips_per_s"]) > 0 and float(row["peak_mem_gb"]) > 0 and row["device"] == "cpu"
    gflops = {name: float(row["gflops_per_clip"]) for name, row in rows.items()}
    # naive dense projects every pair; the exact identity costs what token fusion costs
    assert gflops["dense_naive"] > 1.5 * gflops["dense_fast"] and gflops["late_naive"] > gflops["late_fusion"]
    assert gflops["dense_fast"] == pytest.approx(gflops["token"], rel=1e-6)
    assert gflops["no_fusion"] < gflops["late_fusion"] < gflops["factorized"]
    assert float(rows["factorized"]["throughput_vs_factorized"]) == 1.0
    act = {name: float(row["act_mem_gb_per_clip"]) for name, row in rows.items()}
    assert min(act.values()) > 0 and act["dense_naive"] > 2 * act["dense_fast"]


def test_pretrain_step_benchmark_reports_flops_and_mfu(tmp_path):
    torch.set_num_threads(1)
    bench = _load_script("pretrain_step")
    out = tmp_path / "step.csv"
    assert bench.main(["--preset", "deepavfusion-smoke", "--batch", "2", "--warmup", "1", "--iters", "2",
                       "--peak-flops", "1e11", "--device", "cpu", "--out", str(out)]) == 0
    with open(out) as fh:
        (row,) = list(csv.DictReader(fh))
    step_s, flops = float(row["step_s_median"]), float(row["flops_per_step"])
    assert step_s > 0 and flops > 0
    assert float(row["mfu"]) == pytest.approx(flops / step_s / 1e11, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# branch blocks at fusion layers: the fusion tokens are keys/values only (their rows are discarded)


def _reference_forward_tokens(enc, x_img, x_aud):
    """The encoder loop of spec 2.2 written literally: full block over [fusion ; modality], slice."""
    x_fus = enc.fusion_tokens.expand(x_img.shape[0], -1, -1)
    n = x_fus.shape[1]
    for blk_img, blk_aud, blk_fus in zip(enc.image.blocks, enc.audio.blocks, enc.fusion_blocks):
        if blk_fus is None:
            x_img, x_aud = blk_img(x_img), blk_aud(x_aud)
        else:
            new_img = blk_img(torch.cat([x_fus, x_img], dim=1))[:, n:]
            new_aud = blk_aud(torch.cat([x_fus, x_aud], dim=1))[:, n:]
            x_fus = blk_fus(x_fus, x_img, x_aud)
            x_img, x_aud = new_img, new_aud
    return enc.image.norm(x_img), enc.audio.norm(x_aud), enc.fusion_norm(x_fus)


def test_block_with_prefix_equals_full_block_sliced_also_with_drop_path():
    from avfusion.models.layers import Block

    torch.manual_seed(0)
    block = Block(32, 4, mlp_ratio=2.0, drop_path=0.3).double()
    x = torch.randn(3, 11, 32, dtype=torch.float64)
    block.eval()
    torch.testing.assert_close(block(x, num_prefix=4), block(x)[:, 4:], rtol=1e-12, atol=1e-12)
    block.train()   # DropPath draws one (B, 1, 1) mask per call in both forms
    torch.manual_seed(1)
    ref = block(x)[:, 4:]
    torch.manual_seed(1)
    torch.testing.assert_close(block(x, num_prefix=4), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch,layers", [("factorized", "all"), ("dense", 1)])
def test_encoder_equals_literal_loop_and_skips_the_discarded_rows(arch, layers):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    enc = build_encoder({"preset": "deepavfusion-smoke", "fusion": {"arch": arch, "layers": layers}}).eval()
    enc.requires_grad_(False)   # FlopCounterMode's module tracker needs grad-free leaves under no_grad
    image, audio = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 128, 192)
    with torch.no_grad():
        x_img, x_aud = enc.embed(image, audio)
        ref = _reference_forward_tokens(enc, x_img, x_aud)
        got = enc.forward_tokens(x_img, x_aud)
        flops_ref = efficiency.flops_of(lambda: _reference_forward_tokens(enc, x_img, x_aud))
        flops_new = efficiency.flops_of(lambda: enc.forward_tokens(x_img, x_aud))
    for a, b in zip(ref, got[:3]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # saved per fusion layer and branch: P fusion rows of proj (2PD^2), MLP (4PD*hidden) and
    # attention (QK^T and AV: 4*P*N*D with N = P + the branch's tokens); batch 2
    D, hidden, P = enc.embed_dim, int(enc.embed_dim * 4.0), 8
    n_layers = len(enc.fusion_layers)
    saved = 2 * n_layers * sum(2 * P * D * D + 4 * P * D * hidden + 4 * P * (P + n) * D for n in (16, 96))
    assert flops_ref - flops_new == saved


def test_flop_count_includes_cpu_attention_forward_and_backward():
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    assert efficiency.flops_of(lambda: F.scaled_dot_product_attention(q, k, v)) == 4 * 2 * 3 * 5 * 7 * 8
    backward = efficiency.flops_of(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    # backward: torch's formula (5 matmuls: dV, dP, dQ, dK and the recomputed scores) = 2.5x forward
    assert backward == 4 * 2 * 3 * 5 * 7 * 8 * (1 + 2.5)


# ---------------------------------------------------------------------------------------------
# aggregation cross-attention: projections moved to the query side when that is cheaper


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("n_keys", [196, 19])   # full grid, and the visible count of masked pretraining
def test_cross_attention_absorbed_form_equals_projected_keys_and_values(dtype, tol, n_keys):
    from avfusion.models.fusion import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(64, 4).to(dtype).eval()
    with torch.no_grad():
        for p in attn.parameters():   # biases too: the key bias must cancel, the value bias must not
            p.normal_(0, 0.3)
        x_q, x_kv = torch.randn(2, 8, 64, dtype=dtype), torch.randn(2, n_keys, 64, dtype=dtype)
        q = attn.q(x_q).reshape(2, 8, 4, 16).transpose(1, 2)              # (B, H, Nq, hd)
        ref, got = attn._attend_projected(q, x_kv), attn._attend_absorbed(q, x_kv)
    assert ((got - ref).norm() / ref.norm()).item() < tol and ref.abs().max() > 1.0


def test_aggregation_attention_costs_less_at_paper_size():
    from avfusion.models.fusion import CrossAttention

    attn = CrossAttention(768, 12).eval().requires_grad_(False)
    x_q, x_kv = torch.randn(1, 8, 768), torch.randn(1, 196, 768)
    with torch.no_grad():
        q = attn.q(x_q).reshape(1, 8, 12, 64).transpose(1, 2)
        projected = efficiency.flops_of(lambda: attn._attend_projected(q, x_kv))
        absorbed = efficiency.flops_of(lambda: attn._attend_absorbed(q, x_kv))
        chosen = efficiency.flops_of(lambda: attn(x_q, x_kv))
    assert projected == 2 * 196 * 768 * 1536 + 4 * 12 * 8 * 196 * 64
    assert absorbed == 2 * 2 * 12 * 8 * 64 * 768 + 4 * 12 * 8 * 196 * 768
    assert absorbed < projected / 5
    assert chosen == absorbed + 2 * 2 * 8 * 768 * 768   # + the q and proj linears


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_factorized_pair_attention_identity_equals_materialised_pairs(dtype, tol):
    from avfusion.models.fusion import FactorizedFusionBlock

    torch.manual_seed(0)
    attn = FactorizedFusionBlock(64, 4, attn_ratio=0.25, fusion_tokens=(16, 8, 8)).attn.to(dtype).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
        q = torch.randn(2, 4, 16, 4, dtype=dtype)                        # (B, H, n_fus, d/H)
        g_v, g_a = torch.randn(2, 8, 64, dtype=dtype), torch.randn(2, 8, 64, dtype=dtype)
        ref, got = attn._attend_pairs(q, g_v, g_a), attn._attend_factorized(q, g_v, g_a)
    assert got.shape == (2, 4, 16, 16)
    assert ((got - ref).norm() / ref.norm()).item() < tol and ref.abs().max() > 1.0


# ---------------------------------------------------------------------------------------------
# benchmarks/device_check.py (issue 16, build 4): the verdict from its two CSVs


def _row(columns: str, values: str) -> dict:
    return dict(zip(columns.split(","), values.split(",")))


def test_device_check_verdict_compares_the_loaders_wall_rate_with_the_gpus_clips_per_second():
    check = _load_script("device_check")
    step = [{"preset": "deepavfusion-vggsound", "batch": "64", "dtype": "bf16", "compiled": "True",
             "clips_per_s": "1200", "mfu": "0.41", "gpu": "NVIDIA H200"}]
    cols = "path,workers,items,items_per_s,items_per_cpu_s"
    data = [_row(cols, "raw,paired,39,,13.0"), _row(cols, "prepared,alone,1300,,500"),
            _row(cols, "raw,1,64,14.0,14.0"), _row(cols, "raw,15,64,150.0,12.0"),
            _row(cols, "prepared-u8,1,1280,380.0,390.0"), _row(cols, "prepared-u8,15,1280,1500.0,300.0"),
            _row(cols, "prepared,15,1280,1100.0,250.0")]
    result = check.verdict(step, data)
    assert result["clips_per_s"] == 1200 and result["mfu"] == 0.41
    u8, prepared, raw = (result["paths"][p] for p in ("prepared-u8", "prepared", "raw"))
    assert (u8["workers"], u8["items_per_s"], u8["keeps_up"], u8["loader_over_gpu"]) == (15, 1500.0, True, 1.25)
    assert u8["cores_per_gpu_needed"] == 4.0                       # 1200 clips/s / 300 items per CPU-second
    assert (prepared["keeps_up"], prepared["loader_over_gpu"]) == (False, 0.917)
    assert (raw["keeps_up"], raw["cores_per_gpu_needed"]) == (False, 100.0)
    table = check.markdown(result)
    assert "| prepared-u8 | 15 | 1500 | 300 | 1.25 | yes | 4.0 |" in table and "1200 clips/s, MFU 41.0%" in table
    assert "error" in check.verdict([], data)
