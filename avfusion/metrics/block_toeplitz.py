"""Batched solver for symmetric positive-definite block-Toeplitz systems (block Levinson).

    x = block_levinson_solve(gamma (B, 2L-1, S, S), rhs (B, L, S, K))   # T x = rhs, per batch item

T[a, c] = Γ(c - a) with gamma[:, L-1+k] = Γ(k) and Γ(-k) = Γ(k)^T. The multichannel Levinson
recursion (Levinson 1947; Whittle 1963; Akaike 1973) grows forward vectors f (T f = e_first)
and backward vectors b (T b = e_last) one block per step, and updates the solution from b:
O(L^2 S^3) work instead of the O((L S)^3) of a dense solve.

Two implementations with the same arithmetic: a small C kernel (compiled once with the
system C compiler into a cache folder, called through ctypes; batch items are split over
`threads` threads, ctypes releases the GIL) and a pure-torch one, used when no C compiler is
available (a warning says so). `AVFUSION_TOEPLITZ_SOLVER=torch` forces the torch path.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

C_SOURCE = r"""
#include <stdlib.h>
#include <string.h>
/* Gauss-Jordan inverse of a small S x S matrix with partial pivoting; m is destroyed. */
static int inv_small(long S, double *m, double *out) {
    for (long i = 0; i < S; i++) for (long j = 0; j < S; j++) out[i*S+j] = (i == j);
    for (long c = 0; c < S; c++) {
        long p = c; double best = m[c*S+c] < 0 ? -m[c*S+c] : m[c*S+c];
        for (long r = c+1; r < S; r++) { double v = m[r*S+c] < 0 ? -m[r*S+c] : m[r*S+c]; if (v > best) { best = v; p = r; } }
        if (best == 0.0) return 1;
        if (p != c) for (long j = 0; j < S; j++) {
            double t = m[c*S+j]; m[c*S+j] = m[p*S+j]; m[p*S+j] = t;
            t = out[c*S+j]; out[c*S+j] = out[p*S+j]; out[p*S+j] = t; }
        double d = 1.0 / m[c*S+c];
        for (long j = 0; j < S; j++) { m[c*S+j] *= d; out[c*S+j] *= d; }
        for (long r = 0; r < S; r++) if (r != c) {
            double f = m[r*S+c];
            if (f != 0.0) for (long j = 0; j < S; j++) { m[r*S+j] -= f * m[c*S+j]; out[r*S+j] -= f * out[c*S+j]; }
        }
    }
    return 0;
}
/* out (S x K) += a (S x S) @ b (S x K) */
static inline __attribute__((always_inline)) void mm_acc(long S, long K, const double *a, const double *b, double *out) {
    for (long i = 0; i < S; i++) for (long j = 0; j < S; j++) {
        double aij = a[i*S+j]; const double *bj = b + j*K; double *oi = out + i*K;
        for (long k = 0; k < K; k++) oi[k] += aij * bj[k];
    }
}
/* identity minus p @ q, then inverted into out */
static inline __attribute__((always_inline)) int inv_eye_minus(long S, const double *p, const double *q, double *w, double *out) {
    for (long i = 0; i < S*S; i++) w[i] = 0.0;
    mm_acc(S, S, p, q, w);
    for (long i = 0; i < S*S; i++) w[i] = (i % (S+1) == 0) - w[i];
    return inv_small(S, w, out);
}
static inline __attribute__((always_inline)) int levinson_kernel(long B, long L, const long S, const long K,
        const double *gamma, const double *rhs, double *x) {
    const long SS = S*S, SK = S*K;
    double *f = calloc(L*SS, sizeof(double)), *b = calloc(L*SS, sizeof(double));
    double *nf = calloc(L*SS, sizeof(double)), *nb = calloc(L*SS, sizeof(double));
    double *tmp = calloc(7*SS + 2*SK, sizeof(double));
    double *ef = tmp, *eb = tmp+SS, *al = tmp+2*SS, *de = tmp+3*SS, *be = tmp+4*SS, *ga = tmp+5*SS, *w = tmp+6*SS;
    double *th = tmp + 7*SS, *res = th + SK;
    int status = 0;
    if (!f || !b || !nf || !nb || !tmp) { free(f); free(b); free(nf); free(nb); free(tmp); return -1; }
    for (long bi = 0; bi < B && !status; bi++) {
        const double *g = gamma + bi*(2*L-1)*SS;          /* Γ(k) at g + (L-1+k)*SS */
        const double *y = rhs + bi*L*SK;
        double *xb = x + bi*L*SK;
        memset(xb, 0, L*SK*sizeof(double));
        memcpy(w, g + (L-1)*SS, SS*sizeof(double));
        if (inv_small(S, w, f)) { status = 1 + bi; break; }
        memcpy(b, f, SS*sizeof(double));
        mm_acc(S, K, f, y, xb);
        for (long n = 1; n < L; n++) {
            memset(ef, 0, SS*sizeof(double)); memset(eb, 0, SS*sizeof(double)); memset(th, 0, SK*sizeof(double));
            for (long c = 0; c < n; c++) {
                const double *g_before = g + (L-1+c-n)*SS, *g_after = g + (L+c)*SS;
                mm_acc(S, S, g_before, f + c*SS, ef);          /* err_f = sum_c Γ(c-n) f_c */
                mm_acc(S, S, g_after, b + c*SS, eb);           /* err_b = sum_c Γ(c+1) b_c */
                mm_acc(S, K, g_before, xb + c*SK, th);         /* theta = sum_c Γ(c-n) x_c */
            }
            if (inv_eye_minus(S, eb, ef, w, al) || inv_eye_minus(S, ef, eb, w, de)) { status = 1 + bi; break; }
            memset(be, 0, SS*sizeof(double)); mm_acc(S, S, ef, al, be);
            memset(ga, 0, SS*sizeof(double)); mm_acc(S, S, eb, de, ga);
            for (long i = 0; i < SS; i++) { be[i] = -be[i]; ga[i] = -ga[i]; }
            /* f' = [f; 0] al + [0; b] be,  b' = [f; 0] ga + [0; b] de */
            memset(nf, 0, (n+1)*SS*sizeof(double)); memset(nb, 0, (n+1)*SS*sizeof(double));
            for (long c = 0; c <= n; c++) {
                if (c < n) { mm_acc(S, S, f + c*SS, al, nf + c*SS); mm_acc(S, S, f + c*SS, ga, nb + c*SS); }
                if (c > 0) { mm_acc(S, S, b + (c-1)*SS, be, nf + c*SS); mm_acc(S, S, b + (c-1)*SS, de, nb + c*SS); }
            }
            double *t = f; f = nf; nf = t; t = b; b = nb; nb = t;
            /* x' = [x; 0] + b' (y_n - theta) */
            for (long i = 0; i < SK; i++) res[i] = y[n*SK + i] - th[i];
            for (long c = 0; c <= n; c++) mm_acc(S, K, b + c*SS, res, xb + c*SK);
        }
    }
    free(f); free(b); free(nf); free(nb); free(tmp);
    return status;
}
static int levinson_1_1(long B, long L, const double *g, const double *r, double *x) { return levinson_kernel(B, L, 1, 1, g, r, x); }
static int levinson_2_2(long B, long L, const double *g, const double *r, double *x) { return levinson_kernel(B, L, 2, 2, g, r, x); }
static int levinson_any(long B, long L, long S, long K, const double *g, const double *r, double *x) { return levinson_kernel(B, L, S, K, g, r, x); }
/* Returns 0, -1 when out of memory, or 1 + the index of the batch item whose recursion met a singular pivot. */
int block_levinson(long B, long L, long S, long K, const double *gamma, const double *rhs, double *x) {
    if (S == 1 && K == 1) return levinson_1_1(B, L, gamma, rhs, x);
    if (S == 2 && K == 2) return levinson_2_2(B, L, gamma, rhs, x);
    return levinson_any(B, L, S, K, gamma, rhs, x);
}
"""
C_FLAGS = ["-O3", "-shared", "-fPIC"]
_LIBRARY: ctypes.CDLL | None | bool = None  # None: not tried yet; False: unavailable


def _cache_dir() -> Path:
    root = os.environ.get("AVFUSION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "avfusion")
    return Path(root)


def _load_library():
    """Compile (once per source/flags/machine) and load the C kernel; False when impossible."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    if os.environ.get("AVFUSION_TOEPLITZ_SOLVER", "") == "torch":
        _LIBRARY = False
        return _LIBRARY
    compiler = os.environ.get("CC", "cc")
    key = hashlib.sha1("\n".join([C_SOURCE, compiler, *C_FLAGS, os.uname().machine]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"block_levinson-{key}.so"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src, out = Path(tmp) / "block_levinson.c", Path(tmp) / "block_levinson.so"
                src.write_text(C_SOURCE)
                subprocess.run([compiler, *C_FLAGS, "-o", str(out), str(src)], check=True,
                               capture_output=True, text=True)
                os.replace(out, target)  # atomic: concurrent builders all end with one valid file
        lib = ctypes.CDLL(str(target))
        lib.block_levinson.restype = ctypes.c_int
        lib.block_levinson.argtypes = [ctypes.c_long] * 4 + [ctypes.c_void_p] * 3
        _LIBRARY = lib
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        print(f"avfusion.metrics.block_toeplitz: C kernel unavailable ({compiler}: {detail.strip()[:200]}); "
              "using the slower torch solver (same results)", file=sys.stderr)
        _LIBRARY = False
    return _LIBRARY


def _solve_c(lib, gamma: np.ndarray, rhs: np.ndarray, threads: int) -> np.ndarray:
    batch, n_lags, size, _ = gamma.shape
    length, n_rhs = (n_lags + 1) // 2, rhs.shape[-1]
    x = np.empty((batch, length, size, n_rhs))
    bounds = np.linspace(0, batch, max(1, min(threads, batch)) + 1).astype(int)

    def run(lo: int, hi: int) -> int:
        status = lib.block_levinson(hi - lo, length, size, n_rhs, gamma[lo:hi].ctypes.data,
                                    rhs[lo:hi].ctypes.data, x[lo:hi].ctypes.data)
        if status < 0:
            raise MemoryError(f"block Levinson: could not allocate {4 * length * size * size * 8} bytes")
        return lo + status if status else 0

    if len(bounds) > 2:
        with ThreadPoolExecutor(len(bounds) - 1) as pool:
            statuses = list(pool.map(run, bounds[:-1], bounds[1:]))
    else:
        statuses = [run(0, batch)]
    failed = [s for s in statuses if s]
    if failed:
        raise np.linalg.LinAlgError(f"block Toeplitz system {failed[0] - 1} is singular (zero pivot)")
    return x


def _solve_torch(gamma: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Same recursion as the C kernel, batched in torch (slower: many tiny matrix products)."""
    batch, n_lags, size, _ = gamma.shape
    length = (n_lags + 1) // 2
    eye = torch.eye(size, dtype=gamma.dtype).expand(batch, size, size)
    gamma_rows = gamma.permute(0, 2, 1, 3).contiguous()                     # (B, S, 2L-1, S)
    fwd = torch.linalg.inv(gamma[:, length - 1]).unsqueeze(1)               # (B, 1, S, S)
    bwd = fwd.clone()
    x = fwd @ rhs[:, :1]                                                    # (B, 1, S, K)
    zero = torch.zeros(batch, 1, size, size, dtype=gamma.dtype)
    for n in range(1, length):
        g_before = gamma_rows[:, :, length - 1 - n:length - 1].reshape(batch, size, n * size)  # Γ(c-n), c<n
        g_after = gamma_rows[:, :, length:length + n].reshape(batch, size, n * size)           # Γ(c+1), c<n
        err_f = g_before @ fwd.reshape(batch, n * size, size)               # (B, S, S)
        err_b = g_after @ bwd.reshape(batch, n * size, size)                # (B, S, S)
        theta = g_before @ x.reshape(batch, n * size, -1)                   # (B, S, K)
        alpha = torch.linalg.inv(eye - err_b @ err_f)
        delta = torch.linalg.inv(eye - err_f @ err_b)
        fwd_ext, bwd_ext = torch.cat([fwd, zero], 1), torch.cat([zero, bwd], 1)  # (B, n+1, S, S)
        fwd = fwd_ext @ alpha.unsqueeze(1) - bwd_ext @ (err_f @ alpha).unsqueeze(1)
        bwd = bwd_ext @ delta.unsqueeze(1) - fwd_ext @ (err_b @ delta).unsqueeze(1)
        x = torch.cat([x, torch.zeros_like(x[:, :1])], 1) + bwd @ (rhs[:, n] - theta).unsqueeze(1)
    return x


def block_levinson_solve(gamma, rhs, backend: str = "auto", threads: int | None = None) -> torch.Tensor:
    """gamma (B, 2L-1, S, S), rhs (B, L, S, K) -> x (B, L, S, K), float64.

    backend: "auto" (C kernel when it builds, else torch), "c", or "torch".
    """
    gamma = torch.as_tensor(gamma, dtype=torch.float64)
    rhs = torch.as_tensor(rhs, dtype=torch.float64)
    if gamma.ndim != 4 or rhs.ndim != 4 or gamma.shape[1] != 2 * rhs.shape[1] - 1 or gamma.shape[2] != rhs.shape[2]:
        raise ValueError(f"gamma must be (B, 2L-1, S, S) and rhs (B, L, S, K); got {tuple(gamma.shape)}, {tuple(rhs.shape)}")
    lib = _load_library() if backend in ("auto", "c") else False
    if backend == "c" and not lib:
        raise RuntimeError("the C block-Levinson kernel could not be built (see the message above)")
    if not lib:
        return _solve_torch(gamma, rhs)
    threads = threads or torch.get_num_threads()
    x = _solve_c(lib, np.ascontiguousarray(gamma.numpy()), np.ascontiguousarray(rhs.numpy()), threads)
    return torch.from_numpy(x)
