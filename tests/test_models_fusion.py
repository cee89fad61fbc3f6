"""Fusion blocks against direct hand computations of spec 2.4 and the dense identity of spec 9."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from avfusion.models.fusion import DenseFusionBlock, FactorizedFusionBlock, TokenFusionBlock


def _randomise(module: torch.nn.Module) -> None:
    """Random values everywhere (LN weights too), so a swapped norm or column block shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


def _ln(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _linear(x, lin):
    return x @ lin.weight.T + lin.bias


def _mlp_residual(z, block):
    h = _ln(z, block.norm2)
    return z + _linear(F.gelu(_linear(h, block.mlp.fc1)), block.mlp.fc2)


def _head_attention(q, keys, values, scale):
    """One query vector, lists of key/value vectors -> softmax-weighted sum (explicit loops)."""
    logits = torch.stack([scale * torch.dot(q, k) for k in keys])
    weights = torch.exp(logits - logits.max())
    weights = weights / weights.sum()
    return sum(w * v for w, v in zip(weights, values))


D, H = 16, 2


def test_token_block_matches_hand_computation_of_spec_2_4a():
    torch.manual_seed(1)
    block = TokenFusionBlock(D, H, attn_ratio=0.5, mlp_ratio=2.0).double().eval()
    _randomise(block)
    x_fus, x_img, x_aud = torch.randn(1, 3, D).double(), torch.randn(1, 5, D).double(), torch.randn(1, 4, D).double()
    out = block(x_fus, x_img, x_aud)[0]

    d = int(D * 0.5)
    hd = d // H
    m = _ln(x_fus[0], block.norm1_mm)
    # official quirk: norm1_img acts on audio, norm1_aud on image; keys = [audio ; image], shared kv
    tokens = torch.cat([_ln(x_aud[0], block.norm1_img), _ln(x_img[0], block.norm1_aud)])
    q = _linear(m, block.attn.q)
    kv = _linear(tokens, block.attn.kv)
    k, v = kv[:, :d], kv[:, d:]
    rows = []
    for t in range(m.shape[0]):
        heads = [_head_attention(q[t, h * hd:(h + 1) * hd], k[:, h * hd:(h + 1) * hd], v[:, h * hd:(h + 1) * hd],
                                 scale=1 / math.sqrt(hd)) for h in range(H)]
        rows.append(torch.cat(heads))
    z = m + _linear(torch.stack(rows), block.attn.proj)
    expected = _mlp_residual(z, block)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def _cross_attention_loop(x_q, x_kv, attn, num_heads):
    dim = x_q.shape[-1]
    hd = dim // num_heads
    q = _linear(x_q, attn.q)
    kv = _linear(x_kv, attn.kv)
    k, v = kv[:, :dim], kv[:, dim:]
    rows = [torch.cat([_head_attention(q[t, h * hd:(h + 1) * hd], k[:, h * hd:(h + 1) * hd],
                                       v[:, h * hd:(h + 1) * hd], 1 / math.sqrt(hd)) for h in range(num_heads)])
            for t in range(x_q.shape[0])]
    return _linear(torch.stack(rows), attn.proj)


def test_factorized_block_matches_loop_reimplementation_of_spec_2_4c():
    torch.manual_seed(2)
    tokens = (3, 2, 3)   # fusion, visual aggregation, audio aggregation
    block = FactorizedFusionBlock(D, H, attn_ratio=0.25, mlp_ratio=1.0, fusion_tokens=tokens).double().eval()
    _randomise(block)
    x_fus = torch.randn(1, sum(tokens), D).double()
    x_img, x_aud = torch.randn(1, 5, D).double(), torch.randn(1, 4, D).double()
    out = block(x_fus, x_img, x_aud)[0]

    m = _ln(x_fus[0], block.norm1_mm)
    V, A = _ln(x_img[0], block.norm1_img), _ln(x_aud[0], block.norm1_aud)
    f, g_v, g_a = m[:3], m[3:5], m[5:]
    g_v_hat = _cross_attention_loop(g_v, V, block.attn.attn_v, H)   # output only, no residual
    g_a_hat = _cross_attention_loop(g_a, A, block.attn.attn_a, H)
    d = int(D * 0.25)
    qd, vd = d // H, D // H
    q = _linear(f, block.attn.q)
    keys, values = [], []
    for i in range(g_v_hat.shape[0]):          # visual-major pairs [g_v_i ; g_a_j]
        for j in range(g_a_hat.shape[0]):
            pair = torch.cat([g_v_hat[i], g_a_hat[j]])
            keys.append(_linear(pair, block.attn.k))
            values.append(_linear(pair, block.attn.v))
    rows = []
    for t in range(f.shape[0]):
        rows.append(torch.cat([_head_attention(q[t, h * qd:(h + 1) * qd], [k[h * qd:(h + 1) * qd] for k in keys],
                                               [v[h * vd:(h + 1) * vd] for v in values], 1 / math.sqrt(D / H))
                               for h in range(H)]))   # scale 1/sqrt(D/H) although q/k have d/H dims
    f_new = _linear(torch.stack(rows), block.attn.proj)
    z = m + torch.cat([f_new, g_v_hat, g_a_hat])
    torch.testing.assert_close(out, _mlp_residual(z, block), rtol=1e-10, atol=1e-10)


def test_dense_naive_matches_loop_over_audio_image_pairs_of_spec_2_4b():
    torch.manual_seed(3)
    block = DenseFusionBlock(D, H, attn_ratio=0.25, mlp_ratio=1.0, dense_impl="naive").double().eval()
    _randomise(block)
    x_fus, x_img, x_aud = torch.randn(1, 3, D).double(), torch.randn(1, 4, D).double(), torch.randn(1, 3, D).double()
    out = block(x_fus, x_img, x_aud)[0]

    m = _ln(x_fus[0], block.norm1_mm)
    V, A = _ln(x_img[0], block.norm1_img), _ln(x_aud[0], block.norm1_aud)
    d = int(D * 0.25)
    hd = d // H
    q = _linear(m, block.attn.q)
    keys, values = [], []
    for i in range(A.shape[0]):
        for j in range(V.shape[0]):
            kv = _linear(torch.cat([A[i], V[j]]), block.attn.kv)   # first D kv columns act on audio
            keys.append(kv[:d])
            values.append(kv[d:])
    rows = [torch.cat([_head_attention(q[t, h * hd:(h + 1) * hd], [k[h * hd:(h + 1) * hd] for k in keys],
                                       [v[h * hd:(h + 1) * hd] for v in values], 1 / math.sqrt(D / H))
                       for h in range(H)]) for t in range(m.shape[0])]
    z = m + _linear(torch.stack(rows), block.attn.proj)
    torch.testing.assert_close(out, _mlp_residual(z, block), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attn_ratio", [0.25, 1.0])
@pytest.mark.parametrize("n_img,n_aud", [(196, 96), (49, 19)])   # full and visible-only (masked) counts
def test_dense_fast_equals_naive_float32(attn_ratio, n_img, n_aud):
    torch.manual_seed(4)
    dim, heads = 64, 4
    naive = DenseFusionBlock(dim, heads, attn_ratio=attn_ratio, mlp_ratio=1.0, dense_impl="naive").eval()
    _randomise(naive)
    fast = DenseFusionBlock(dim, heads, attn_ratio=attn_ratio, mlp_ratio=1.0, dense_impl="fast").eval()
    fast.load_state_dict(naive.state_dict(), strict=True)   # same parameters and state dict
    x_fus, x_img, x_aud = torch.randn(2, 32, dim), torch.randn(2, n_img, dim), torch.randn(2, n_aud, dim)
    with torch.no_grad():
        ref, got = naive(x_fus, x_img, x_aud), fast(x_fus, x_img, x_aud)
        ref_attn = naive.attn(x_fus, x_aud, x_img)
        got_attn = fast.attn(x_fus, x_aud, x_img)
    assert ((got - ref).norm() / ref.norm()).item() < 1e-5
    assert ((got_attn - ref_attn).norm() / ref_attn.norm()).item() < 1e-5
    assert ref_attn.abs().max() > 0.1   # the attention output is not trivially zero


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in elements) produced by any op."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest_intermediate(impl: str, n_img: int, n_aud: int) -> int:
    torch.manual_seed(5)
    block = DenseFusionBlock(64, 4, attn_ratio=0.25, mlp_ratio=1.0, dense_impl=impl).eval()
    inputs = torch.randn(1, 32, 64), torch.randn(1, n_img, 64), torch.randn(1, n_aud, 64)
    recorder = _LargestTensor()
    with torch.no_grad(), recorder:
        block(*inputs)
    return recorder.largest


def test_dense_fast_memory_linear_in_token_counts_naive_quadratic():
    fast_small, fast_big = _largest_intermediate("fast", 98, 48), _largest_intermediate("fast", 196, 96)
    naive_small, naive_big = _largest_intermediate("naive", 98, 48), _largest_intermediate("naive", 196, 96)
    # naive materialises the (1, n_a*n_v, 2D) pairs: 4x more when both counts double
    assert naive_big == 196 * 96 * 128 and naive_small * 4 == naive_big
    # fast: the largest tensor is a token-level one, at most linear in n_a + n_v, never pairwise
    assert fast_big <= 2 * fast_small
    assert fast_big < 196 * 96   # smaller than even one scalar per pair


def test_paper_scale_parameters_per_fusion_block():
    def count(cls, attn, mlp):
        with torch.device("meta"):
            block = cls(768, 12, attn_ratio=attn, mlp_ratio=mlp)
        return sum(p.numel() for p in block.parameters())

    assert count(FactorizedFusionBlock, 0.25, 1.0) == 8_125_824
    assert count(FactorizedFusionBlock, 1.0, 4.0) == 12_995_328
    assert count(FactorizedFusionBlock, 0.25, 4.0) == 11_667_072
    assert count(DenseFusionBlock, 0.25, 1.0) == 2_073_408
    assert count(DenseFusionBlock, 1.0, 4.0) == 8_270_592
    assert count(TokenFusionBlock, 0.25, 1.0) == 1_778_496
    assert count(TokenFusionBlock, 1.0, 4.0) == 7_090_944
    with torch.device("meta"):
        attn = FactorizedFusionBlock(768, 12, attn_ratio=0.25, mlp_ratio=1.0).attn
    sizes = {name: sum(p.numel() for p in getattr(attn, name).parameters())
             for name in ("attn_v", "attn_a", "q", "k", "v", "proj")}
    assert sizes == {"attn_v": 2_362_368, "attn_a": 2_362_368, "q": 147_648, "k": 295_104,
                     "v": 1_180_416, "proj": 590_592}


def test_bad_fusion_block_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="dense_impl"):
        DenseFusionBlock(64, 4, dense_impl="quick")
    with pytest.raises(ValueError, match="attn_ratio"):
        FactorizedFusionBlock(64, 4, attn_ratio=0.1)
    block = FactorizedFusionBlock(64, 4, fusion_tokens=(4, 2, 2))
    with pytest.raises(ValueError, match="fusion tokens"):
        block(torch.randn(1, 5, 64), torch.randn(1, 3, 64), torch.randn(1, 3, 64))
