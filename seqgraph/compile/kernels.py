"""Fixed Numba kernels (products, lookups, the fused softmax cross-entropy) and the disk
cache of generated kernels.

Every product goes through `np.dot` inside njit code, so all BLAS calls of the compiled
executor use one OpenBLAS (the one Numba links through scipy), never two thread pools.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile

import numpy as np


def _load_blas():
    """Numba reaches BLAS through `scipy.linalg.cython_blas` (it imports that module by
    name and reads its C function pointers). Importing it the usual way runs all of
    `scipy.linalg`'s package init: 28 MB of a training process's peak memory, against 3
    for the extension module alone, loaded here under its own name (a later
    `import scipy.linalg` finds it and uses the same module). Any surprise: the usual
    import."""
    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return
    try:
        import importlib.machinery

        import scipy
        folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
        found = importlib.machinery.PathFinder.find_spec("cython_blas", [folder])
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        found.loader.exec_module(module)
        if not getattr(module, "__pyx_capi__", None):
            raise ImportError(name)
    except Exception:          # noqa: BLE001  (whatever went wrong: the plain import)
        sys.modules.pop(name, None)
        import scipy.linalg.cython_blas


_load_blas()

# numba after the BLAS it will use (above)
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload


# ------------------------------------------------------------------- buffer pool
class Pool:
    """Arrays kept from run to run: a training step reuses the pages of the last one
    instead of faulting in fresh ones (large `np.empty`s are fresh mmaps). Buffers are
    flat, binned by size (the next power of two) and reshaped to the shape asked for:
    the lengths of padded batches change from batch to batch, and a pool keyed by shape
    keeps buffers for every length it has seen (measured: a tagger's pool grew to 270 MB
    over the 55 lengths of 200 batches, an attention stage's to 800 MB; binned, each
    size has at most a few bins, each at most twice the size). A buffer is handed out
    again only when nothing outside the pool holds it (its reference count says so; a
    view keeps its base alive), so an array a caller keeps from an earlier result is
    never overwritten: the next run takes another buffer."""

    KEEP = 64             # buffers per size (an LSTM holds 12 alike at once)

    def __init__(self):
        self.free = {}

    def empty(self, shape, dtype):
        shape = tuple(int(n) for n in shape)
        n = 1
        for d in shape:
            n *= d
        return self.flat(n, dtype)[:n].reshape(shape)

    def flat(self, n, dtype, extra=0):
        """A free flat buffer of the bin of n (`extra` elements more)."""
        cap = 1 << max(n - 1, 0).bit_length()
        lst = self.free.setdefault((cap, np.dtype(dtype).str), [])
        for a in lst:
            if sys.getrefcount(a) <= 3:      # the list, `a` and the call: free
                return a
        a = np.empty(cap + extra, dtype)
        if len(lst) < self.KEEP:
            lst.append(a)
        return a

    def zeros(self, shape, dtype):
        a = self.empty(shape, dtype)
        a.fill(0)
        return a


class StaggeredPool(Pool):
    """A pool whose buffers start at staggered offsets (a step of 64 bytes from one
    buffer to the next, 64 in turn): large buffers are page-aligned, and a loop that
    reads and writes a dozen of them at the same row (an attention step's tapes and
    gradients) hits the same sets of the L1 cache at every element (4K aliasing):
    measured, an elementwise kernel over 10 gradients [64, 256] of one page-aligned
    array took 700 us, staggered 130."""

    STEPS = 64

    def __init__(self):
        super().__init__()
        self.turn = 0

    def empty(self, shape, dtype):
        shape = tuple(int(n) for n in shape)
        n = 1
        for d in shape:
            n *= d
        step = max(64 // np.dtype(dtype).itemsize, 1)
        self.turn = (self.turn + 1) % self.STEPS
        off = self.turn * step
        a = self.flat(n, dtype, self.STEPS * step)    # (4 KB more than its bin)
        return a[off:off + n].reshape(shape)


# ---------------------------------------------------------------- BLAS, directly
# Numba's np.dot hands a whole product to xgemm. Calling xgemm ourselves (through the
# same `numba_xxgemm` helper np.dot uses, so the kernels stay cacheable) gives leading
# dimensions (products into column blocks of a wider array), beta = 1 (accumulate in
# place) and the choice of how to split a product. OpenBLAS runs a product with
# m*n*k <= 1e6 through its "small matrix" kernels (no packing): on this machine ~105
# GFLOP/s for [32, 128] x [128, 240], against ~60 for the packed path at [32, 128] x
# [128, 512]. So a step's product is cut into column blocks under that size.
SMALL_GEMM = 1_000_000


if config.DISABLE_JIT:
    def _view(a, off, rows, cols, ld):
        flat = a.reshape(-1)
        return np.lib.stride_tricks.as_strided(
            flat[off:], shape=(rows, cols), strides=(ld * flat.itemsize, flat.itemsize))

    def mm(M, N, K, A, ao, lda, B_, bo, ldb, C, co, ldc, beta):
        """Row-major C[M, N] (leading dim ldc, offset co) = A[M, K] @ B[K, N] + beta C."""
        c = _view(C, co, M, N, ldc)
        r = _view(A, ao, M, K, lda) @ _view(B_, bo, K, N, ldb)
        if beta == 0:
            c[...] = r
        else:
            c += r
        return 0
else:
    @intrinsic
    def _xgemm(typingctx, ta, tb, m, n, k, alpha, a, aoff, lda, b, boff, ldb, beta, c,
               coff, ldc):
        """Column-major BLAS xgemm on a + aoff, b + boff, c + coff (offsets in elements)."""
        sig = types.int32(ta, tb, m, n, k, alpha, a, aoff, lda, b, boff, ldb, beta, c,
                          coff, ldc)
        dt = c.dtype

        def codegen(context, builder, sig, args):
            from llvmlite import ir
            A = sig.args
            ch = ir.IntType(8)
            vp = ch.as_pointer()
            ip = context.get_value_type(types.intp)
            fnty = ir.FunctionType(ir.IntType(32), [ch, ch, ch, ip, ip, ip, vp, vp, ip, vp,
                                                    ip, vp, vp, ip])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

            def i(j):
                return context.cast(builder, args[j], A[j], types.intp)

            def ptr(j, o):
                arr = context.make_array(A[j])(context, builder, args[j])
                return builder.bitcast(builder.gep(arr.data, [i(o)]), vp)

            def scalar(j):
                v = context.cast(builder, args[j], A[j], dt)
                return builder.bitcast(cgutils.alloca_once_value(builder, v), vp)
            kind = ir.Constant(ch, ord("s" if str(dt) == "float32" else "d"))
            return builder.call(fn, [kind, builder.trunc(i(0), ch), builder.trunc(i(1), ch),
                                     i(2), i(3), i(4), scalar(5), ptr(6, 7), i(8),
                                     ptr(9, 10), i(11), scalar(12), ptr(13, 14), i(15)])
        return sig, codegen

    @njit(cache=True, nogil=True)
    def mm(M, N, K, A, ao, lda, B_, bo, ldb, C, co, ldc, beta):
        """Row-major C[M, N] (leading dim ldc, offset co) = A[M, K] @ B[K, N] + beta C
        (as column-major BLAS: C^T = B^T A^T)."""
        return _xgemm(110, 110, N, M, K, 1.0, B_, bo, ldb, A, ao, lda, beta, C, co, ldc)


@njit(cache=True, nogil=True)
def mm_blocks(M, N, K, A, ao, lda, B_, bo, ldb, C, co, ldc, beta, NB, KB):
    """mm cut into column blocks of NB and (accumulated) row blocks of KB of B."""
    k0 = 0
    while k0 < K:
        kb = min(KB, K - k0)
        b1 = beta if k0 == 0 else 1.0
        n0 = 0
        while n0 < N:
            nb = min(NB, N - n0)
            mm(M, nb, kb, A, ao + k0, lda, B_, bo + k0 * ldb + n0, ldb, C, co + n0, ldc, b1)
            n0 += nb
        k0 += kb
    return 0


def blocks(M, N, K):
    """(NB, KB): how to cut a [M, K] x [K, N] product (M = the batch) into small-kernel
    products. Measured here for M = 32 (GFLOP/s, 1 thread): [128 -> 512] whole 68, in
    128-column blocks 111; [512 -> 2048] whole 62, in 128 x 128 blocks 101; blocks much
    narrower than 128, or K-blocks longer, lose again (B read with a long stride)."""
    if M * N * K <= SMALL_GEMM or M > 128 or M == 0:
        return max(N, 1), max(K, 1)
    kb = min(K, 128)
    nb = min(N, 128, max(16, SMALL_GEMM // (M * kb) // 16 * 16))
    return nb, kb


# ------------------------------------------------------------------------- products
@njit(cache=True)
def _dot(a, b, out):
    np.dot(a, b, out)


if config.DISABLE_JIT:
    def _tiled(fa, ta, fb, tb, out, K, mb, nb, kb):
        np.dot(fa.T if ta else fa, fb.T if tb else fb, out)
        return 0
else:
    @njit(cache=True, nogil=True)
    def _tiled(fa, ta, fb, tb, out, K, mb, nb, kb):
        """out[M, N] = a[M, K] @ b[K, N] in tiles of mb x nb x kb, each one product on
        OpenBLAS's small-matrix path (K tiles accumulated with beta = 1). fa, fb: the
        C-ordered storage of a and b, which is a itself, or (ta) a^T (a transposed view,
        given to BLAS as 't'). C arrays only: one compiled version per dtype."""
        M, N = out.shape
        lda, ldb = (M if ta else K), (K if tb else N)
        fla, flb = (116 if ta else 110), (116 if tb else 110)
        for i0 in range(0, M, mb):
            m = min(mb, M - i0)
            for j0 in range(0, N, nb):
                n = min(nb, N - j0)
                for k0 in range(0, K, kb):
                    k = min(kb, K - k0)
                    ao = k0 * M + i0 if ta else i0 * K + k0
                    bo = j0 * K + k0 if tb else k0 * N + j0
                    _xgemm(flb, fla, n, m, k, 1.0, fb, bo, ldb, fa, ao, lda,
                           0.0 if k0 == 0 else 1.0, out, i0 * N + j0, N)
        return 0


def tiles(M, N, K):
    """(mb, nb, kb) for a product too big for OpenBLAS's small-matrix kernels, or None.
    Measured here (1 thread, float32, GFLOP/s, whole -> tiled): the char LM's logits
    [2048, 128] x [128, 65] 92 -> 111 and their gradient [2048, 65] x [65, 128] 98 -> 114
    (row tiles of 112); the weight gradients over all steps [65, 2048] x [2048, 128]
    77 -> 102 and [128, 2048] x [2048, 128] 80 -> 107 (K tiles of 60-120, accumulated).
    Only narrow outputs (N <= 128) gain: [2048, 512] x [512, 128] 87 -> 100 and the
    LSTM's [512, 2048] x [2048, 128] 77 -> 92, but [2048, 128] x [128, 512] 91 -> 76
    (the packed path is at its best there). Whole K when it is short (a tile then covers
    rows), else 128-row tiles and K cut to fit."""
    if M * N * K <= SMALL_GEMM or min(M, N, K) == 0 or N > 128:
        return None
    nb = N
    if K <= 256:
        kb = K
        mb = min(M, max(16, SMALL_GEMM // (nb * kb) // 16 * 16))
    else:
        mb = min(M, 128)
        kb = min(K, max(16, SMALL_GEMM // (mb * nb) // 4 * 4))
    return mb, nb, kb


def matmul(a, b, out=None):
    """a @ b through Numba's BLAS (both 2-D, any of C or F order); a product too big for
    OpenBLAS's small-matrix kernels is cut into tiles that are not (`tiles`)."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if a.shape[0] == 0 or b.shape[1] == 0:
        return out
    if a.shape[1] == 0:
        out[:] = 0
        return out
    a, b = _c_or_f(a), _c_or_f(b)
    t = tiles(a.shape[0], b.shape[1], a.shape[1])
    if t is not None and out.flags.c_contiguous and a.dtype == b.dtype == out.dtype \
            and out.dtype.kind == "f":
        ta, tb = not a.flags.c_contiguous, not b.flags.c_contiguous
        _tiled(a.T if ta else a, ta, b.T if tb else b, tb, out, a.shape[1], *t)
    else:
        _dot(a, b, out)
    return out


def _c_or_f(a):
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a
    return np.ascontiguousarray(a)


# -------------------------------------------------------------------------- lookups
@njit(cache=True)
def _gather(WT, ids, out):
    # out[r] = W[:, ids[r]] (a zero row for id -1): the one-hot product as a lookup
    n = out.shape[1]
    for r in range(ids.shape[0]):
        i = ids[r]
        if i >= 0:
            for k in range(n):
                out[r, k] = WT[i, k]
        else:
            for k in range(n):
                out[r, k] = 0


def gather(W, ids, pool=None):
    shape = (ids.shape[0], W.shape[0])
    out = pool.empty(shape, W.dtype) if pool is not None else np.empty(shape, W.dtype)
    _gather(np.ascontiguousarray(W.T), np.ascontiguousarray(ids), out)
    return out


@njit(cache=True)
def add_bias(x, b):
    """x[r] += b for every row, in place."""
    for r in range(x.shape[0]):
        for k in range(x.shape[1]):
            x[r, k] += b[k]


@njit(cache=True, fastmath=True)
def _colsum(g, off, out):
    n = out.shape[0]
    for k in range(n):
        out[k] = 0
    for r in range(g.shape[0]):
        row = g[r, off:off + n]      # (a slice, not row[off + k]: that one runs scalar)
        for k in range(n):
            out[k] += row[k]


def colsum(g):
    """The sum of g's rows over every leading axis (the gradient of a bias), in one
    pass, reading a column block in place."""
    out = np.empty(g.shape[-1], g.dtype)
    base, off = column_block(g)
    _colsum(base, off, out)
    return out


@njit(cache=True, fastmath=True)
def _scatter(g, off, ids, dWT):
    # the VJP of the lookup: rows of g (columns off.. of them) added into the columns
    # of W they were read from
    n = dWT.shape[1]
    for r in range(ids.shape[0]):
        i = ids[r]
        if i >= 0:
            row = g[r, off:off + n]
            out = dWT[i]
            for k in range(n):
                out[k] += row[k]


def scatter(g, ids, shape):
    dWT = np.zeros((shape[1], shape[0]), dtype=g.dtype)
    base, off = column_block(g)
    _scatter(base, off, np.ascontiguousarray(ids).reshape(-1), dWT)
    return dWT.T


@njit(cache=True, fastmath=True)
def gather_bias(WT, ids, b, out):
    """out[r] = W[:, ids[r]] + b (b alone for id -1): the stacked gate inputs of a
    one-hot operand in one pass (not a gather, then a bias pass over the same rows)."""
    n = out.shape[1]
    for r in range(ids.shape[0]):
        i = ids[r]
        row = out[r]
        if i >= 0:
            w = WT[i]
            for k in range(n):
                row[k] = w[k] + b[k]
        else:
            for k in range(n):
                row[k] = b[k]


@njit(cache=True, fastmath=True)
def scatter_colsum(g, ids, dWT, db):
    """The VJP of gather_bias in one pass over g [R, n]: rows added into the columns of
    W they were read from (dWT, zeroed by the caller) and summed into db."""
    n = g.shape[1]
    for k in range(n):
        db[k] = 0
    for r in range(ids.shape[0]):
        row = g[r]
        for k in range(n):
            db[k] += row[k]
        i = ids[r]
        if i >= 0:
            out = dWT[i]
            for k in range(n):
                out[k] += row[k]


def column_block(g):
    """g ([..., n]) as (rows [R, M] of a C-contiguous array, first column): a gradient
    that is a column block of a wider one (a gate's slice of dG) is read in place, by
    vectorised loops, instead of copied. The wider array's rows are found from g's own
    strides, M numbers apart from the start of g's C-contiguous base (a pooled array's
    base is its flat buffer: kernels.Pool)."""
    n = g.shape[-1]
    if g.flags.c_contiguous:
        return g.reshape(-1, n), 0
    b = g.base
    it = g.itemsize
    if b is not None and b.flags.c_contiguous and g.ndim >= 2 and \
            g.strides[-1] == it and g.strides[-2] % it == 0 and \
            all(g.strides[i] == g.strides[i + 1] * g.shape[i + 1]
                for i in range(g.ndim - 2)):
        M = g.strides[-2] // it
        start = (g.ctypes.data - b.ctypes.data) // it
        r0, c0 = divmod(start, M)
        R = g.size // n
        if M >= n and c0 + n <= M and (r0 + R) * M <= b.size:
            flat = b.reshape(-1)
            return flat[:(flat.size // M) * M].reshape(-1, M)[r0:r0 + R], c0
    return np.ascontiguousarray(g).reshape(-1, n), 0


# ---------------------------------------------------------------- softmax x-entropy
if config.DISABLE_JIT:
    def _as_float32(i):
        return np.array(i, dtype=np.int32).view(np.float32)[()]
else:
    @intrinsic
    def _as_float32(typingctx, i):
        """The float32 whose bits are the int32 i."""
        sig = types.float32(types.int32)

        def codegen(context, builder, sig, args):
            from llvmlite import ir
            return builder.bitcast(args[0], ir.FloatType())
        return sig, codegen


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_E2, _E3, _E4, _E5, _E6, _E7 = (np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24),
                                np.float32(1 / 120), np.float32(1 / 720),
                                np.float32(1 / 5040))


@njit(fastmath=True, error_model="numpy", inline="always")
def expf_neg(x):
    """exp(x) for float32 x <= 0 (a softmax's shifted logits) that vectorises: 2^n by
    the exponent bits, e^r by its Taylor series on |r| <= ln2/2; relative error ~2e-7,
    0 below e^-87."""
    x = max(x, np.float32(-87.0))
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (_E2 + r * (_E3 + r * (
        _E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    return p * _as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


# -------------------------------------------------- the output layer, fused with its loss
# The softmax kernels' fastmath: no nnan/ninf (an overflowed logit, inf, or a NaN gives
# the interpreter's inf/NaN loss, not whatever a no-inf assumption makes of it).
_XENT_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(fastmath=False, error_model="numpy")
def _plus(total, x):
    """total + x outside fastmath: a row's loss is (m - o_t) + log(sum), and reassociation
    may add (total + m) - o_t instead, which loses total when the logits are huge (1e45:
    total + m = m, minus o_t = m gives 0). A strict add (fastmath=False said explicitly, or
    a callee inherits its caller's; LLVM keeps each instruction's own flags when it
    inlines this) adds whole rows."""
    return total + x


def _exp_neg(x):
    """exp(x) for x <= 0: expf_neg for float32 (vectorises), np.exp for float64."""
    return np.exp(x)


@overload(_exp_neg)
def _ol_exp_neg(x):
    if x == types.float32:
        return lambda x: expf_neg(x)
    return lambda x: np.exp(x)


@njit(fastmath=_XENT_FAST, error_model="numpy", inline="always")
def _xent_rows(o, y, r0, r1, scale, grad):
    """Softmax cross-entropy of the rows r0..r1 of o [N, V] (as _xent, gradient always)."""
    V = o.shape[1]
    total = 0.0
    count = 0
    sc = grad.dtype.type(scale)
    for r in range(r0, r1):
        t = y[r]
        if t < 0:
            for v in range(V):
                grad[r, v] = 0
            continue
        m = o[r, 0]
        for v in range(1, V):
            m = max(m, o[r, v])
        s = o.dtype.type(0)           # not o[r, 0] * 0: NaN for an infinite logit
        for v in range(V):
            e = _exp_neg(o[r, v] - m)
            grad[r, v] = e
            s += e
        total = _plus(total, (m - o[r, t]) + np.log(np.float64(s)))
        count += 1
        f = sc / s
        for v in range(V):
            grad[r, v] *= f
        grad[r, t] -= sc
    return total, count


@njit(fastmath=_XENT_FAST, error_model="numpy", inline="always")
def _xent_cols(oT, y, r0, m, scale, gT, mx, sm):
    """Softmax cross-entropy of a tile held transposed: column r of oT [V, MB] is the
    logits of row r0 + r. Every loop runs along the tile's rows (contiguous, a multiple
    of the vector width), none along the V classes (65 for the char LM: a remainder at
    every row). gT = scale * (softmax - onehot) in the same layout (0 for id -1)."""
    V = oT.shape[0]
    sc = gT.dtype.type(scale)
    for r in range(m):
        mx[r] = oT[0, r]
    for v in range(1, V):
        row = oT[v]
        for r in range(m):
            mx[r] = max(mx[r], row[r])
    for r in range(m):
        sm[r] = 0
    for v in range(V):
        row, g = oT[v], gT[v]
        for r in range(m):
            e = _exp_neg(row[r] - mx[r])
            g[r] = e
            sm[r] += e
    total = 0.0
    count = 0
    for r in range(m):                 # log-sum-exp - the target's logit; 1/sum -> sm
        t = y[r0 + r]
        if t < 0:
            sm[r] = 0
            continue
        total = _plus(total, (mx[r] - oT[t, r]) + np.log(np.float64(sm[r])))
        count += 1
        sm[r] = sc / sm[r]
    for v in range(V):
        g = gT[v]
        for r in range(m):
            g[r] *= sm[r]
    for r in range(m):
        t = y[r0 + r]
        if t >= 0:
            gT[t, r] -= sc
    return total, count


@njit(cache=True, nogil=True, fastmath=_XENT_FAST, error_model="numpy")
def _output_xent(X, W, b, y, scale, logits, dW, db, dX, MB):
    """`o = W @ x + b` for every row of X [R, K] and `xent(o, y)`, forward and backward,
    tile by tile: per tile of MB rows the logits (one product), the loss and dlog, the
    bias sums, dW += dlog^T x (accumulated) and dX = dlog W, all while the tile is in
    cache; each product on OpenBLAS's small-matrix path (MB * V * K <= 1e6). The tile
    is held transposed ([V, MB]: the softmax vectorises along rows, and every product's
    vectorised dimension is MB or K, not V); its logits are copied out to `logits`."""
    R, K = X.shape
    V = W.shape[0]
    oT = np.empty((V, MB), X.dtype)
    gT = np.empty((V, MB), X.dtype)
    mx = np.empty(MB, X.dtype)
    sm = np.empty(MB, X.dtype)
    total = 0.0
    count = 0
    for k in range(V):
        db[k] = 0
    for r0 in range(0, R, MB):
        m = min(MB, R - r0)
        # oT[:, :m] = W @ X[r0:r0+m]^T   (column-major [m, V] = X_tile [m, K] W^T)
        _xgemm(116, 110, m, V, K, 1.0, X, r0 * K, K, W, 0, K, 0.0, oT, 0, MB)
        for v in range(V):
            bv, row = b[v], oT[v]
            for r in range(m):
                row[r] += bv
        for r in range(m):            # the logits out, row by row (contiguous writes)
            out = logits[r0 + r]
            for v in range(V):
                out[v] = oT[v, r]
        s, n = _xent_cols(oT, y, r0, m, scale, gT, mx, sm)
        total = _plus(total, s)
        count += n
        for v in range(V):
            g = gT[v]
            acc = g[0] * 0
            for r in range(m):
                acc += g[r]
            db[v] += acc
        # dW [V, K] += gT[:, :m] @ X[r0:r0+m]   (column-major [K, V] += X_tile^T gT^T)
        _xgemm(110, 110, K, V, m, 1.0, X, r0 * K, K, gT, 0, MB,
               0.0 if r0 == 0 else 1.0, dW, 0, K)
        # dX[r0:r0+m] = gT[:, :m]^T @ W   (column-major [K, m] = W^T gT)
        _xgemm(110, 116, K, m, V, 1.0, W, 0, K, gT, 0, MB, 0.0, dX, r0 * K, K)
    return total, count


def output_tile(V, K):
    """Rows per tile of the fused output layer, or None where it does not pay (a tile
    under 64 rows: wide vocabularies or states keep the separate products)."""
    mb = SMALL_GEMM // max(V * K, 1) // 16 * 16
    return mb if mb >= 64 else None


def output_xent(X, W, b, y, scale, logits, dW, db, dX, MB):
    """_output_xent; under NUMBA_DISABLE_JIT (no BLAS intrinsic) the same with numpy."""
    if config.DISABLE_JIT:
        np.matmul(X, W.T, out=logits)
        logits += b
        s, n, dlog = xent(logits, y, scale, True)
        db[:] = dlog.sum(axis=0)
        dW[:] = dlog.T @ X
        dX[:] = dlog @ W
        return s, n
    return _output_xent(X, W, b, y, scale, logits, dW, db, dX, MB)


@njit(cache=True, fastmath=_XENT_FAST, error_model="numpy")
def _xent(o, y, scale, grad, want_grad):
    """Per-row softmax cross-entropy of logits o [N, V] against ids y [N] (-1: none);
    returns the summed loss and the count, and (want_grad) writes
    scale * (softmax - onehot) into grad. float32 logits: the exponentials vectorised
    (expf_neg, within 2 ulp of libm), the row sums in float32, the total in float64."""
    if want_grad:
        return _xent_rows(o, y, 0, o.shape[0], scale, grad)
    total = 0.0
    count = 0
    for r in range(o.shape[0]):
        t = y[r]
        if t < 0:
            continue
        m = o[r, 0]
        for v in range(1, o.shape[1]):
            m = max(m, o[r, v])
        s = o.dtype.type(0)           # not o[r, 0] * 0: NaN for an infinite logit
        for v in range(o.shape[1]):
            s += _exp_neg(o[r, v] - m)
        total = _plus(total, (m - o[r, t]) + np.log(np.float64(s)))
        count += 1
    return total, count


def xent(o, y, scale, want_grad=True, out=None):
    o = np.ascontiguousarray(o)
    grad = (out if out is not None else np.empty_like(o)) if want_grad else \
        np.empty((1, 1), o.dtype)
    total, count = _xent(o, np.ascontiguousarray(y), scale, grad, want_grad)
    return total, count, (grad if want_grad else None)


@njit(cache=True, fastmath=True, error_model="numpy")
def _adam(pf, gf, mf, vf, lr, b1, b2, eps, c1, c2):
    one = b1 / b1             # 1 in the parameters' dtype (a literal 1 makes float64)
    a = lr / c1
    ic2 = one / c2
    ob1 = one - b1
    ob2 = one - b2
    for i in range(pf.size):
        gi = gf[i]
        mi = b1 * mf[i] + ob1 * gi
        vi = b2 * vf[i] + ob2 * gi * gi
        mf[i] = mi
        vf[i] = vi
        pf[i] -= a * mi / (np.sqrt(vi * ic2) + eps)


@njit(cache=True)
def _transpose(AT, out):
    """out[R, C] = AT[C, R].T (out C-ordered, AT's rows contiguous), in 32 x 32 tiles
    (read along AT's rows, written from cache): 0.64 ms at [64, 12000] float32, numpy's
    copy of the transposed view 0.79 (and a fresh array's page faults on top)."""
    R, C = out.shape
    for j0 in range(0, C, 32):
        j1 = min(j0 + 32, C)
        for i0 in range(0, R, 32):
            i1 = min(i0 + 32, R)
            for j in range(j0, j1):
                a = AT[j]
                for i in range(i0, i1):
                    out[i, j] = a[i]


_SCRATCH = Pool()          # adam_update's C-ordered copies of F-ordered gradients


def adam_update(p, g, m, v, lr, b1, b2, eps, c1, c2):
    """One Adam step in one pass, in place (bias corrections c1 = 1 - b1^t,
    c2 = 1 - b2^t). The arrays go in flat (1-D, contiguous): `ravel` inside the
    kernel keeps LLVM from vectorising (measured 2.8 against 0.3 ns per element).
    p, m, v C-contiguous; g any layout, copied to C order first: a 2-D g whose columns
    are contiguous (an embedding's gradient from `scatter`, F-ordered, or a gate's rows
    of the stacked one of a one-hot input) by tiles (`_transpose`). The same arithmetic
    for every layout: at [64, 12000] float32 0.9 ms, against 6 for optim.Adam's numpy
    form."""
    if g.ndim == 2 and not g.flags.c_contiguous and g.strides[0] == g.itemsize and g.size:
        gc = _SCRATCH.empty(g.shape, g.dtype)
        _transpose(g.T, gc)
        g = gc
    _adam(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
          lr, b1, b2, eps, c1, c2)


# ------------------------------------------------------------- generated kernels
_CACHE_DIRS: dict = {}


def cache_dir() -> str:
    """Where generated kernels are kept between runs: $SEQGRAPH_CACHE, or seqgraph/ in
    the user's cache folder. One that cannot be written (a read-only home, a file in its
    place) is said once, and the kernels go to a temporary folder for this process."""
    d = os.environ.get("SEQGRAPH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "seqgraph")
    if d not in _CACHE_DIRS:
        try:
            os.makedirs(d, exist_ok=True)
            with tempfile.TemporaryFile(dir=d):
                pass
            _CACHE_DIRS[d] = d
        except OSError as e:
            _CACHE_DIRS[d] = tempfile.mkdtemp(prefix="seqgraph-kernels-")
            atexit.register(shutil.rmtree, _CACHE_DIRS[d], ignore_errors=True)
            sys.stderr.write(f"seqgraph: warning: cannot write the kernel cache {d} "
                             f"({e.strerror or e}); kernels are compiled into "
                             f"{_CACHE_DIRS[d]} for this run (set SEQGRAPH_CACHE to a "
                             f"writable folder to keep them between runs)\n")
    return _CACHE_DIRS[d]


_MODULES: dict = {}


def load_source(source: str):
    """Import generated source from the cache dir, named by its hash, so that Numba's
    cache=True keeps the compiled kernels for the next process."""
    key = hashlib.sha256(source.encode()).hexdigest()[:20]
    if key in _MODULES:
        return _MODULES[key]
    d = cache_dir()
    name = f"sg_{key}"
    path = os.path.join(d, name + ".py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _MODULES[key] = mod
    return mod
