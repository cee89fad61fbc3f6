"""The three fusion blocks of DeepAVFusion, exactly as the official `models/fusion_blocks.py`
(spec 2.3-2.5, 9): token fusion, dense interactions (naive or fast), factorized interactions.

Common skeleton (not standard pre-LN: the residual is added to the *normalised* fusion tokens):
    m = norm1_mm(x_fus);  z = m + DropPath(CA(m, image, audio));  out = z + DropPath(MLP(norm2(z)))
`attn_ratio` sets the fusion cross-attention's q/k width d = int(D * attn_ratio); `mlp_ratio` the
MLP hidden width D * mlp_ratio. All blocks are called as block(x_fus, x_img, x_aud).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, Mlp


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, H, N, C/H)."""
    B, N, C = x.shape
    return x.reshape(B, N, num_heads, C // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, c) -> (B, N, H*c)."""
    B, H, N, c = x.shape
    return x.transpose(1, 2).reshape(B, N, H * c)


def _pairs(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """All pairs [first_i ; second_j], first-major: (B, n1, D), (B, n2, D) -> (B, n1*n2, 2D)."""
    B, n1, D = first.shape
    n2 = second.shape[1]
    return torch.cat([first.unsqueeze(2).expand(B, n1, n2, D),
                      second.unsqueeze(1).expand(B, n1, n2, D)], dim=3).reshape(B, n1 * n2, 2 * D)


def _reduced_dim(dim: int, num_heads: int, attn_ratio: float) -> int:
    reduced = int(dim * attn_ratio)
    if reduced <= 0 or reduced % num_heads:
        raise ValueError(f"attn_ratio={attn_ratio}: int(dim*attn_ratio)={reduced} must be a positive "
                         f"multiple of num_heads={num_heads} (dim={dim})")
    return reduced


class CrossAttention(nn.Module):
    """Full-width multi-head cross-attention: q (D->D), kv (D->2D), proj (D->D), scale 1/sqrt(D/H).

    With few queries and many keys (the factorized block's 8 aggregation tokens over 196 image or
    96 audio tokens) the key/value projection of every token dominates the cost. The same output
    is then computed with the projections moved to the query side (exact): per head h,
    q_h . (W_k,h x + b_k,h) = (W_k,h^T q_h) . x + const (the key bias cancels in the softmax) and
    sum_j p_j (W_v,h x_j + b_v,h) = W_v,h (sum_j p_j x_j) + b_v,h. `forward` picks the cheaper form.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        """x_q (B, Nq, D), x_kv (B, Nk, D) -> (B, Nq, D)."""
        q = _split_heads(self.q(x_q), self.num_heads)                     # (B, H, Nq, hd)
        D, Nq, Nk = x_kv.shape[2], x_q.shape[1], x_kv.shape[1]
        # multiply-adds: k/v projection of Nk tokens + attention, vs query-side projections + attention in D dims
        projected_cost = 2 * Nk * D * D + 2 * Nq * Nk * D
        absorbed_cost = 2 * Nq * D * D + 2 * self.num_heads * Nq * Nk * D
        attend = self._attend_absorbed if absorbed_cost < projected_cost else self._attend_projected
        return self.proj_drop(self.proj(_merge_heads(attend(q, x_kv))))  # (B, Nq, D)

    def _attend_projected(self, q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        k, v = (_split_heads(t, self.num_heads) for t in self.kv(x_kv).chunk(2, dim=-1))  # (B, H, Nk, hd)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                              scale=self.scale)           # (B, H, Nq, hd)

    def _attend_absorbed(self, q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        B, H, Nq, hd = q.shape
        D = x_kv.shape[2]
        w_k, w_v = self.kv.weight[:D].view(H, hd, D), self.kv.weight[D:].view(H, hd, D)  # (H, hd, D) each
        q_in = torch.einsum("bhqe,hed->bhqd", q, w_k).reshape(B, 1, H * Nq, D)  # (B, 1, H*Nq, D)
        tokens = x_kv.unsqueeze(1)                                        # (B, 1, Nk, D): shared by all heads
        mixed = F.scaled_dot_product_attention(q_in, tokens, tokens,
                                               dropout_p=self.attn_drop if self.training else 0.0,
                                               scale=self.scale)          # (B, 1, H*Nq, D) = sum_j p_j x_j
        out = torch.einsum("bhqd,hed->bhqe", mixed.reshape(B, H, Nq, D), w_v)  # (B, H, Nq, hd)
        if self.kv.bias is not None:                                      # value bias; the key bias cancels
            out = out + self.kv.bias[D:].view(1, H, 1, hd)
        return out


class TokenCrossAttention(nn.Module):
    """Fusion queries attend to the union of tokens with one shared kv projection (D -> 2d).

    Scale 1/sqrt(d/H) (the correct one for the reduced width)."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.dim = _reduced_dim(dim, num_heads, attn_ratio)
        self.scale = (self.dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, self.dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, self.dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(self.dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, m: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """m (B, F, D), tokens (B, N, D) -> (B, F, D)."""
        q = _split_heads(self.q(m), self.num_heads)                       # (B, H, F, d/H)
        k, v = (_split_heads(t, self.num_heads) for t in self.kv(tokens).chunk(2, dim=-1))  # (B, H, N, d/H)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                             scale=self.scale)            # (B, H, F, d/H)
        return self.proj_drop(self.proj(_merge_heads(out)))               # (B, F, D)


class DenseCrossAttention(nn.Module):
    """Fusion queries attend to all n_a*n_v pairs [audio_i ; image_j] (audio-major).

    kv: Linear(2D -> 2d) whose first D input columns act on audio, the next D on image (the
    official argument swap). Scale 1/sqrt(D/H) regardless of attn_ratio (official quirk).
    impl 'naive' materialises the (B, n_a*n_v, 2D) pairs; 'fast' uses the exact identity of spec 9
    (softmax over pairs = softmax over audio x softmax over image; the key bias cancels):
    out = SDPA(q, K_a a, V_a a) + SDPA(q, K_v x, V_v x) + b_v, memory O(n_a + n_v).
    """

    def __init__(self, dim: int, num_heads: int, attn_ratio: float, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, impl: str = "fast"):
        super().__init__()
        if impl not in ("naive", "fast"):
            raise ValueError(f"dense_impl: got {impl!r}, expected 'naive' or 'fast'")
        if impl == "fast" and attn_drop > 0:
            raise ValueError(f"dense_impl='fast' is exact only without attention dropout; got attn_drop={attn_drop} "
                             "(use dense_impl='naive')")
        self.impl = impl
        self.num_heads = num_heads
        self.embed_dim = dim
        self.dim = _reduced_dim(dim, num_heads, attn_ratio)
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, self.dim, bias=qkv_bias)
        self.kv = nn.Linear(dim * 2, self.dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(self.dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, m: torch.Tensor, audio: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """m (B, F, D), audio (B, n_a, D), image (B, n_v, D) -> (B, F, D)."""
        q = _split_heads(self.q(m), self.num_heads)                       # (B, H, F, d/H)
        if self.impl == "naive":
            out = self._attend_pairs(q, audio, image)
        else:
            out = self._attend_factorized(q, audio, image)
        return self.proj_drop(self.proj(_merge_heads(out)))               # (B, F, D)

    def _attend_pairs(self, q: torch.Tensor, audio: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        pairs = _pairs(audio, image)                                      # (B, n_a*n_v, 2D)
        k, v = (_split_heads(t, self.num_heads) for t in self.kv(pairs).chunk(2, dim=-1))  # (B, H, P, d/H)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0,
                                              scale=self.scale)           # (B, H, F, d/H)

    def _attend_factorized(self, q: torch.Tensor, audio: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        D = self.embed_dim
        w_audio, w_image = self.kv.weight[:, :D], self.kv.weight[:, D:]   # (2d, D) each
        k_a, v_a = (_split_heads(t, self.num_heads) for t in F.linear(audio, w_audio).chunk(2, dim=-1))
        k_v, v_v = (_split_heads(t, self.num_heads) for t in F.linear(image, w_image).chunk(2, dim=-1))
        out = (F.scaled_dot_product_attention(q, k_a, v_a, scale=self.scale)    # (B, H, F, d/H)
               + F.scaled_dot_product_attention(q, k_v, v_v, scale=self.scale))
        if self.kv.bias is not None:                                      # the key bias cancels in the softmax
            value_bias = self.kv.bias[self.dim:]                          # (d,)
            out = out + value_bias.reshape(1, self.num_heads, 1, self.dim // self.num_heads)
        return out


class FactorizedCrossAttention(nn.Module):
    """DeepAVFusion's factorized interactions (spec 2.4c).

    Split m into f (n_fus), g_v (n_aggV), g_a (n_aggA); aggregate g_v <- CA(g_v, image), g_a <-
    CA(g_a, audio) (full width, output only); f attends to the n_aggV*n_aggA pairs [g_v_i ; g_a_j]
    (visual-major) with q, k of width d, v of full width D, scale 1/sqrt(D/H); returns [f', g_v, g_a].
    """

    def __init__(self, dim: int, num_heads: int, attn_ratio: float, fusion_tokens: tuple[int, int, int],
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.dim = _reduced_dim(dim, num_heads, attn_ratio)
        self.scale = (dim // num_heads) ** -0.5
        self.fusion_tokens = tuple(fusion_tokens)
        self.attn_v = CrossAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.attn_a = CrossAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.q = nn.Linear(dim, self.dim, bias=qkv_bias)
        self.k = nn.Linear(dim * 2, self.dim, bias=qkv_bias)
        self.v = nn.Linear(dim * 2, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, m: torch.Tensor, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """m (B, n_fus+n_aggV+n_aggA, D), image (B, n_v, D), audio (B, n_a, D) -> like m."""
        if m.shape[1] != sum(self.fusion_tokens):
            raise ValueError(f"factorized fusion block: expected {sum(self.fusion_tokens)} fusion tokens "
                             f"{self.fusion_tokens}, got {m.shape[1]}")
        f, g_v, g_a = m.split(self.fusion_tokens, dim=1)
        g_v = self.attn_v(g_v, image)                                     # (B, n_aggV, D)
        g_a = self.attn_a(g_a, audio)                                     # (B, n_aggA, D)
        q = _split_heads(self.q(f), self.num_heads)                       # (B, H, n_fus, d/H)
        if self.training and self.attn_drop > 0:   # dropout over pairs does not factorize (spec 9)
            out = self._attend_pairs(q, g_v, g_a)
        else:
            out = self._attend_factorized(q, g_v, g_a)
        f = self.proj_drop(self.proj(_merge_heads(out)))                  # (B, n_fus, D)
        return torch.cat([f, g_v, g_a], dim=1)

    def _attend_pairs(self, q: torch.Tensor, g_v: torch.Tensor, g_a: torch.Tensor) -> torch.Tensor:
        pairs = _pairs(g_v, g_a)                                          # (B, n_aggV*n_aggA, 2D)
        k = _split_heads(self.k(pairs), self.num_heads)                   # (B, H, P, d/H)
        v = _split_heads(self.v(pairs), self.num_heads)                   # (B, H, P, D/H)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0,
                                              scale=self.scale)           # (B, H, n_fus, D/H)

    def _attend_factorized(self, q: torch.Tensor, g_v: torch.Tensor, g_a: torch.Tensor) -> torch.Tensor:
        """Spec 9 on the pairs [g_v_i ; g_a_j]: softmax over pairs = softmax over i x softmax over j,
        so attention over the pairs = attention over g_v + attention over g_a (+ value bias)."""
        D = g_v.shape[2]
        k_v = _split_heads(F.linear(g_v, self.k.weight[:, :D]), self.num_heads)   # (B, H, n_aggV, d/H)
        k_a = _split_heads(F.linear(g_a, self.k.weight[:, D:]), self.num_heads)   # (B, H, n_aggA, d/H)
        v_v = _split_heads(F.linear(g_v, self.v.weight[:, :D]), self.num_heads)   # (B, H, n_aggV, D/H)
        v_a = _split_heads(F.linear(g_a, self.v.weight[:, D:]), self.num_heads)   # (B, H, n_aggA, D/H)
        out = (F.scaled_dot_product_attention(q, k_v, v_v, scale=self.scale)      # (B, H, n_fus, D/H)
               + F.scaled_dot_product_attention(q, k_a, v_a, scale=self.scale))
        if self.v.bias is not None:                                       # the key bias cancels in the softmax
            out = out + self.v.bias.view(1, self.num_heads, 1, D // self.num_heads)
        return out


class _FusionBlock(nn.Module):
    """norm1_mm, norm1_aud, norm1_img, attn, norm2, mlp (official names and order), LN eps 1e-5."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1_mm = nn.LayerNorm(dim)
        self.norm1_aud = nn.LayerNorm(dim)
        self.norm1_img = nn.LayerNorm(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def cross_attend(self, m: torch.Tensor, x_img: torch.Tensor, x_aud: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x_fus: torch.Tensor, x_img: torch.Tensor, x_aud: torch.Tensor) -> torch.Tensor:
        """x_fus (B, F, D), x_img (B, n_v, D), x_aud (B, n_a, D) -> new x_fus (B, F, D)."""
        m = self.norm1_mm(x_fus)
        z = m + self.drop_path(self.cross_attend(m, x_img, x_aud))       # residual on the normalised tokens
        return z + self.drop_path(self.mlp(self.norm2(z)))


class TokenFusionBlock(_FusionBlock):
    """Token fusion (`FusionBlock_LocalAVTokens`): one softmax over [audio ; image] tokens.

    Official naming quirk kept: `norm1_img` normalises the *audio* tokens, `norm1_aud` the image."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.25, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 fusion_tokens=None, dense_impl=None):
        attn = TokenCrossAttention(dim, num_heads, attn_ratio, qkv_bias, attn_drop, drop)
        super().__init__(dim, attn, mlp_ratio, drop, drop_path)

    def cross_attend(self, m, x_img, x_aud):
        tokens = torch.cat([self.norm1_img(x_aud), self.norm1_aud(x_img)], dim=1)  # (B, n_a+n_v, D)
        return self.attn(m, tokens)


class DenseFusionBlock(_FusionBlock):
    """Dense interactions (`FusionBlock_DenseAVInteractions`); `dense_impl` 'naive' or 'fast'."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.25, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 fusion_tokens=None, dense_impl: str = "fast"):
        attn = DenseCrossAttention(dim, num_heads, attn_ratio, qkv_bias, attn_drop, drop, impl=dense_impl)
        super().__init__(dim, attn, mlp_ratio, drop, drop_path)

    def cross_attend(self, m, x_img, x_aud):
        return self.attn(m, self.norm1_aud(x_aud), self.norm1_img(x_img))


class FactorizedFusionBlock(_FusionBlock):
    """Factorized interactions (`FusionBlock_FactorizedAVInteractions`), the DeepAVFusion default."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.25, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 fusion_tokens: tuple[int, int, int] = (16, 8, 8), dense_impl=None):
        attn = FactorizedCrossAttention(dim, num_heads, attn_ratio, fusion_tokens, qkv_bias, attn_drop, drop)
        super().__init__(dim, attn, mlp_ratio, drop, drop_path)

    def cross_attend(self, m, x_img, x_aud):
        return self.attn(m, self.norm1_img(x_img), self.norm1_aud(x_aud))


# arch name (and official alias) -> block class
FUSION_BLOCKS = {
    "factorized": FactorizedFusionBlock, "factorized_mmi": FactorizedFusionBlock,
    "dense": DenseFusionBlock, "dense_mmi": DenseFusionBlock,
    "token": TokenFusionBlock,
}
