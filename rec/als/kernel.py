"""The fused CPU kernel of one ALS side: Gram, system and solve in one pass per row (SPEC §2.3, §2.4).

The torch path (:mod:`rec.als.solve`) gathers every rating's ``[x, offset]``
into a padded workspace, reads it back for a batched ``Z^T Z`` and then
solves; the gathered rows go through memory twice.  This kernel reads each
row's ratings once from a CSR layout (:class:`rec.als.groups.RowRatings`),
copies them a few at a time into a small block that stays in cache, forms only
the upper triangle of the Gram (it is symmetric), adds the prior and solves the
system by an in-place Cholesky factorization, all before moving to the next row.
The Gram is formed, for rows of up to :data:`ROW_GRAM_WIDTHS` entries, by one
vector a rating and one accumulator a row of the Gram (:func:`_row_gram_intrinsic`);
by vector accumulators in code generated for the table's width up to
:data:`UNROLLED_WIDTHS` (:func:`accumulate_source`); and past it by
register-blocked tiles (:func:`_accumulate`, :func:`gram_tile`), as a GEMM kernel
forms a product.  The same per-row Cholesky also solves the torch path's batched
Grams (:func:`_solve_batch`, ``engine.solver=rows``).  With ``noise`` it instead
returns a draw ``mean + U^-1 z`` of the Gaussian whose precision ``U^T U`` is the
system matrix (the Gibbs sampler's conditional).

It is compiled by Numba (a PyPI wheel, no compiler needed) on first use and
cached on disk (generated kernels under :func:`cache_dir`); where Numba is
missing, :data:`AVAILABLE` is false and the torch path runs.  The torch path
stays the reference the tests compare it with.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import sys
import types
from pathlib import Path

import numpy as np

try:
    import numba
    AVAILABLE = True
except ImportError:  # pragma: no cover - the torch path runs instead
    numba = None
    AVAILABLE = False

TILE_RATINGS = 128
"""Ratings packed into the work buffer at a time by the tiled :func:`_accumulate`."""

TILE_BYTES = 64
"""Bytes of one tile vector: 16 float32 (one AVX-512 register, two AVX ones) or 8 float64."""


def _has_wide_registers() -> bool:
    """Whether the code Numba generates has AVX-512's 32 vector registers of
    :data:`TILE_BYTES` (``NUMBA_CPU_FEATURES`` where set, else the host's features)."""
    if not AVAILABLE:
        return False
    from llvmlite import binding
    features = numba.core.config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


TILE_ROWS, TILE_VECTORS = (8, 2) if _has_wide_registers() else (4, 1)
"""Rows and vectors of columns of the Gram one tile of :func:`_accumulate` forms: its
``TILE_ROWS x TILE_VECTORS`` accumulators stay in vector registers while the packed ratings
stream past, each rating's ``TILE_ROWS + TILE_VECTORS`` loads feeding ``TILE_ROWS x
TILE_VECTORS`` multiply-adds.  With AVX-512's 32 registers, 8 x 2 (16 accumulators); with
AVX's 16, whose vectors are half as wide, 4 x 1 (8 registers): 8 x 2 there spills them and
runs 1.5x slower (``benchmarks/README.md``, "Wider tiles")."""


def _accumulate(start, stop, cols, vals, levels, table, a, z):
    """Set ``a``'s upper triangle to ``[x, y]^T [x, y]`` over the ratings ``start:stop``, for
    any width (``a``: at least :func:`gram_size` square, float64; ``z``: :func:`buffer_size`
    entries of the table's dtype, zeros past each packed row's width).

    Register-blocked, as a GEMM kernel is: up to :data:`TILE_RATINGS` ratings at a time are
    packed row-major into ``z`` (the row of the rating :data:`PREFETCH_AHEAD` further on
    fetched meanwhile), then each tile of :data:`TILE_ROWS` rows by :data:`TILE_VECTORS`
    vectors of columns, from the diagonal on, keeps its sums in registers over all of them
    (:func:`gram_tile`) and adds them to ``a`` once; a row's last tiles are as narrow as its
    remaining columns allow (one vector, or a half, quarter or eighth of one).  Entries below
    the diagonal and past the width that tiles also form are never read."""
    width = table.shape[1]
    d = width - 1
    lanes = TILE_BYTES // z.itemsize
    wp = _packed_width(width, lanes)
    base, row_bytes = table.ctypes.data, table.strides[0]
    rows_contiguous = table.strides[1] == table.itemsize
    for first in range(start, stop, TILE_RATINGS):
        m = min(TILE_RATINGS, stop - first)
        for n in range(m):
            prefetch_row_ahead(base, row_bytes, cols, first + n)
            c = cols[first + n]
            o = n * wp
            if rows_contiguous:
                copy_row(z, o, table, c, d)
            else:
                for i in range(d):
                    z[o + i] = table[c, i]
            z[o + d] = value(vals, levels, first + n) - table[c, d]
        gram_tiles(z, wp, m, width, a, first == start)
    if stop == start:
        for i in range(width):
            for j in range(i, width):
                a[i, j] = 0.0


def _gram_tiles(z, wp, m, width, a, store):
    """Set (``store``) or add to ``a``'s upper triangle the Gram ``sum_n z_n z_n^T`` of the
    ``m`` rows of ``width`` entries packed in ``z`` every ``wp`` entries (see
    :func:`_accumulate`), tile by tile."""
    lanes = TILE_BYTES // z.itemsize
    for i0 in range(0, width, TILE_ROWS):
        j0 = i0  # a tile's columns start at its first row: little below the diagonal
        while j0 < width:
            left = width - j0  # the last tile of a row as narrow as will do
            if TILE_VECTORS > 1 and left > lanes * (TILE_VECTORS - 1):  # reads < wp
                gram_tile_wide(z, wp, m, i0, j0, a, store)
                j0 += lanes * TILE_VECTORS
            elif left > lanes // 2:
                gram_tile(z, wp, m, i0, j0, a, store)
                j0 += lanes
            elif left > lanes // 4:
                gram_tile_2(z, wp, m, i0, j0, a, store)
                j0 += lanes // 2
            elif left > lanes // 8:
                gram_tile_4(z, wp, m, i0, j0, a, store)
                j0 += lanes // 4
            else:
                gram_tile_8(z, wp, m, i0, j0, a, store)
                j0 += lanes // 8


def _packed_width(width, lanes):
    """Entries of one packed rating in :func:`_accumulate`'s buffer, and rows and columns of
    the matrix it forms the Gram in: the width rounded up to whole vectors, and one vector
    more, which the last tiles of a row read past the width."""
    return (width + lanes - 1) // lanes * lanes + lanes


def _gram_size(width):
    """Rows and columns of the float64 matrix :func:`_accumulate` forms a Gram in (float32's
    lanes, the most a tile has), and columns :func:`_solve_one` needs."""
    return _packed_width(width, TILE_BYTES // 4)


def _buffer_size(width):
    """Entries of the work buffer of :func:`_accumulate` (enough for float32 and float64)."""
    return TILE_RATINGS * gram_size(width)


def _ir_fma(builder, vec):
    """LLVM's ``fmuladd`` on vectors ``vec``: a fused multiply-add where the CPU has one."""
    from llvmlite import ir
    from numba.core import cgutils
    kind = "f64" if isinstance(vec.element, ir.DoubleType) else "f32"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                          f"llvm.fmuladd.v{vec.count}{kind}")


def _ir_splat(builder, x, vec):
    """The scalar ``x`` in every lane of a ``vec``."""
    from llvmlite import ir
    i32, undefined = ir.IntType(32), ir.Constant(vec, ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undefined, x, ir.Constant(i32, 0)),
                                  undefined, ir.Constant(ir.VectorType(i32, vec.count),
                                                         [0] * vec.count))


def _ir_prefetch(builder, pointer):
    """LLVM's prefetch hint (read, keep in all cache levels) for the cache line at
    ``pointer`` (an ``i8*``): no instruction where the CPU has none."""
    from llvmlite import ir
    i32 = ir.IntType(32)
    hint = builder.module.declare_intrinsic(
        "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), (pointer.type, i32, i32, i32)))
    builder.call(hint, (pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)))


def _ir_rows(context, builder, array_type, array):
    """A float64 C-order matrix's first entry (a ``double*``) and row stride in entries."""
    from llvmlite import ir
    arr = context.make_array(array_type)(context, builder, array)
    i64 = ir.IntType(64)
    return (builder.bitcast(arr.data, ir.DoubleType().as_pointer()),
            builder.udiv(builder.extract_value(arr.strides, 0), ir.Constant(i64, 8)))


class _IRLoop:
    """``for k in range(start, stop, step)`` in LLVM IR: made at the loop's head (where the
    caller may add more phi nodes, with :attr:`entry` as their first predecessor), then
    :meth:`test` enters the body and :meth:`close` ends it."""

    def __init__(self, builder, name, start, step):
        self.builder, self.step, self.entry = builder, step, builder.block
        self.head, self.body, self.done = (builder.append_basic_block(f"{name}.{part}")
                                           for part in ("head", "body", "done"))
        builder.branch(self.head)
        builder.position_at_end(self.head)
        self.k = builder.phi(start.type)
        self.k.add_incoming(start, self.entry)

    def test(self, stop):
        """Into the body while ``k < stop``."""
        self.builder.cbranch(self.builder.icmp_signed("<", self.k, stop), self.body, self.done)
        self.builder.position_at_end(self.body)

    def close(self):
        """Step ``k`` and go back to the head; the builder continues after the loop."""
        self.k.add_incoming(self.builder.add(self.k, self.step), self.builder.block)
        self.builder.branch(self.head)
        self.builder.position_at_end(self.done)


def _gram_tile_intrinsic(vector_bytes, vectors=1):
    """``gram_tile(z, wp, m, i0, j0, a, store)``: for the ``m`` ratings packed in ``z``
    (row-major, ``wp`` entries each), the sums ``sum_n z[n, i0 + r] z[n, j0:j0 + lanes]``
    for ``r < TILE_ROWS`` (``lanes``: ``vectors`` vectors of z's dtype in ``vector_bytes``
    each), held in vector registers over ``n``, then stored into (``store``) or added to
    ``a[i0 + r, j0:j0 + lanes]`` (float64).  Written in LLVM IR because the
    compiler does not find this blocking in Python loops: from loops it vectorized over the
    ratings, whose sums then left the registers (measured at K = 64: 3-5 GFLOP/s per core
    against 35-40 for this tile)."""
    from llvmlite import ir

    @numba.extending.intrinsic
    def gram_tile(typingctx, z, wp, m, i0, j0, a, store):
        if not (isinstance(z, numba.types.Array) and isinstance(a, numba.types.Array)):
            return None

        def codegen(context, builder, sig, args):
            z_arr = context.make_array(sig.args[0])(context, builder, args[0])
            ap, lda = _ir_rows(context, builder, sig.args[5], args[5])
            wp, m, i0, j0 = (context.cast(builder, v, t, numba.types.int64)
                             for v, t in zip(args[1:5], sig.args[1:5]))
            store = context.cast(builder, args[6], sig.args[6], numba.types.boolean)
            elem = context.get_data_type(sig.args[0].dtype)
            i64, size = ir.IntType(64), context.get_abi_sizeof(elem)
            vec = ir.VectorType(elem, vector_bytes // size)
            vec64 = ir.VectorType(ir.DoubleType(), vec.count)
            fma = _ir_fma(builder, vec)
            zp = builder.bitcast(z_arr.data, elem.as_pointer())
            loop = _IRLoop(builder, "tile", ir.Constant(i64, 0), ir.Constant(i64, 1))
            sums = [[builder.phi(vec) for _ in range(vectors)] for _ in range(TILE_ROWS)]
            for row_sums in sums:
                for s in row_sums:
                    s.add_incoming(ir.Constant(vec, None), loop.entry)
            loop.test(m)
            row = builder.mul(loop.k, wp)
            column = lambda v: builder.add(j0, ir.Constant(i64, v * vec.count))
            ys = [builder.load(builder.bitcast(builder.gep(zp, [builder.add(row, column(v))]),
                                               vec.as_pointer()), align=size)
                  for v in range(vectors)]
            at = builder.add(row, i0)
            for r, row_sums in enumerate(sums):
                x = _ir_splat(builder, builder.load(
                    builder.gep(zp, [builder.add(at, ir.Constant(i64, r))])), vec)
                for y, s in zip(ys, row_sums):
                    s.add_incoming(builder.call(fma, [x, y, s]), builder.block)
            loop.close()
            for r, row_sums in enumerate(sums):
                for v, s in enumerate(row_sums):
                    at = builder.add(builder.mul(builder.add(i0, ir.Constant(i64, r)), lda),
                                     column(v))
                    ptr = builder.bitcast(builder.gep(ap, [at]), vec64.as_pointer())
                    old = builder.select(store, ir.Constant(vec64, None),
                                         builder.load(ptr, align=8))
                    wide = s if size == 8 else builder.fpext(s, vec64)
                    builder.store(builder.fadd(old, wide), ptr, align=8)
            return context.get_dummy_value()
        return numba.types.void(z, wp, m, i0, j0, a, store), codegen
    return gram_tile


ROW_GRAM_WIDTHS = 16
"""Widest ``[x, y]`` whose generated ``accumulate`` is :func:`_row_gram_intrinsic`'s: a
rating's whole table row is one vector (16 float32: one AVX-512 register)."""


def _row_lanes(width):
    """Lanes of :func:`_row_gram_intrinsic`'s vectors: the least power of two >= ``width``."""
    lanes = 4
    while lanes < width:
        lanes *= 2
    return lanes


def _row_gram_intrinsic(width):
    """``row_gram(start, stop, cols, vals, levels, table, a)``: ``a[i, :width]`` (float64, at
    least :func:`_row_lanes` columns) set to ``sum_n z_n[i] z_n`` over the ratings
    ``start:stop`` for ``i < width``, ``z = [x, y]``, ``x = table[c, :d]``,
    ``y = value - table[c, d]`` (the upper triangle is the Gram; below it, its mirror).

    Each rating's row is one masked vector load (lanes past ``width`` read as zeros, so no
    read passes the row's end), ``y`` replaces the offset lane, and ``width`` accumulators,
    held in registers over the whole row, each take one multiply-add of a broadcast entry
    (read from the table row) by that vector; the row of the rating :data:`PREFETCH_AHEAD`
    further on is asked for meanwhile.  Against the lanes-over-ratings code of
    :func:`accumulate_source`, which copies each rating's entries into a buffer and ends each
    row by summing ``width (width + 1) / 2`` vectors' lanes, it takes half the time per rating
    at width 12 (the form of the C++ speed anchor, ``benchmarks/anchor``)."""
    from llvmlite import ir
    from numba.core import cgutils

    @numba.extending.intrinsic
    def row_gram(typingctx, start, stop, cols, vals, levels, table, a):
        arrays = (cols, vals, levels, table, a)
        if not all(isinstance(x, numba.types.Array) for x in arrays):
            return None

        def codegen(context, builder, sig, args):
            i1, i8p, i32, i64 = ir.IntType(1), ir.IntType(8).as_pointer(), ir.IntType(32), \
                ir.IntType(64)
            start, stop = (context.cast(builder, args[i], sig.args[i], numba.types.int64)
                           for i in (0, 1))

            def data(i):
                arr = context.make_array(sig.args[i])(context, builder, args[i])
                elem = context.get_data_type(sig.args[i].dtype)
                return arr, elem, builder.bitcast(arr.data, elem.as_pointer())

            (cols_arr, col_t, cp), (_, val_t, vp), (_, level_t, lp), (tab, elem, tp) = (
                data(i) for i in (2, 3, 4, 5))
            ap, lda = _ir_rows(context, builder, sig.args[6], args[6])
            size, lanes, d = context.get_abi_sizeof(elem), _row_lanes(width), width - 1
            vec = ir.VectorType(elem, lanes)
            keep = ir.Constant(ir.VectorType(i1, lanes), [int(i < width) for i in range(lanes)])
            kind = "f64" if size == 8 else "f32"
            masked_load = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec.as_pointer(), i32, keep.type, vec]),
                f"llvm.masked.load.v{lanes}{kind}.p0")
            fma = _ir_fma(builder, vec)
            stride = builder.udiv(builder.extract_value(tab.strides, 0), ir.Constant(i64, size))
            n_cols = builder.extract_value(cols_arr.shape, 0)

            def row_of(k):
                c = builder.load(builder.gep(cp, [k]))
                c = builder.sext(c, i64) if col_t.width < 64 else c
                return builder.gep(tp, [builder.mul(c, stride)])

            loop = _IRLoop(builder, "row_gram", start, ir.Constant(i64, 1))
            sums = [builder.phi(vec) for _ in range(width)]
            for s in sums:
                s.add_incoming(ir.Constant(vec, None), loop.entry)
            loop.test(stop)
            k = loop.k
            ahead = builder.add(k, ir.Constant(i64, PREFETCH_AHEAD))
            ahead = builder.select(builder.icmp_signed("<", ahead, n_cols), ahead, k)
            _ir_prefetch(builder, builder.bitcast(row_of(ahead), i8p))
            row = row_of(k)
            z = builder.call(masked_load, [builder.bitcast(row, vec.as_pointer()),
                                           ir.Constant(i32, size), keep, ir.Constant(vec, None)])
            v = builder.load(builder.gep(vp, [k]))
            if isinstance(val_t, ir.IntType):  # a code: the value is its level
                v, val_t = builder.load(builder.gep(lp, [builder.zext(v, i64)])), level_t
            if val_t != elem:
                v = (builder.fpext if context.get_abi_sizeof(val_t) < size
                     else builder.fptrunc)(v, elem)
            y = builder.fsub(v, builder.extract_element(z, ir.Constant(i32, d)))
            z = builder.insert_element(z, y, ir.Constant(i32, d))
            for i, s in enumerate(sums):
                x = y if i == d else builder.load(builder.gep(row, [ir.Constant(i64, i)]))
                s.add_incoming(builder.call(fma, [_ir_splat(builder, x, vec), z, s]),
                               builder.block)
            loop.close()
            wide = ir.VectorType(ir.DoubleType(), lanes)
            for i, s in enumerate(sums):
                at = builder.gep(ap, [builder.mul(ir.Constant(i64, i), lda)])
                builder.store(s if size == 8 else builder.fpext(s, wide),
                              builder.bitcast(at, wide.as_pointer()), align=8)
            return context.get_dummy_value()
        return numba.types.void(start, stop, cols, vals, levels, table, a), codegen
    return row_gram


@functools.cache
def row_gram_for(width: int):
    """The compiled :func:`_row_gram_intrinsic` for rows of ``width`` entries (made once)."""
    return _row_gram_intrinsic(width)


LANES = 8
"""Ratings per vector of a generated ``accumulate``: one AVX register of float32."""

HALVES = 2
"""Vectors of ratings copied per step: each accumulator's load and store then serves
``HALVES`` multiply-adds (measured at K = 10: 2 beat 1 by 20%)."""

PREFETCH_AHEAD = 16
"""Ratings ahead whose table row a generated ``accumulate`` asks the CPU to fetch while it
copies the current ones.  Every rating reads a random row of a table of megabytes, and
without the hint the copy waits for each (measured at ML-32M, K = 10: 12.6 and 10.6 ns per
rating in the user and movie steps without it, 8.0 with 16 ahead, 8.3 with 32, 9.4 with 128)."""


def accumulate_source(width: int) -> str:
    """Python source of ``accumulate`` and ``buffer_size`` for rows ``[x, y]`` of exactly
    ``width`` entries.

    Up to :data:`ROW_GRAM_WIDTHS` entries ``accumulate`` is :func:`_row_gram_intrinsic`'s
    loop (one vector a rating).  Wider, each step copies ``HALVES LANES`` ratings
    column-major into a flat buffer (asking for the table row of the rating
    :data:`PREFETCH_AHEAD` further on as it goes), then adds
    ``z_i z_j`` lane by lane into one vector accumulator per entry of the Gram's upper
    triangle, held in the same buffer (``width (width + 1) / 2`` of them); a row's Gram is
    the lanes' sums.  Every offset is a constant, so the compiler can prove that the
    accumulators and the copied ratings never overlap and vectorizes the lanes; with loops
    over the width (:func:`_accumulate`) it cannot, and short rows leave its vector loops in
    their scalar remainders (measured at K = 10: this is 2.5x faster).
    """
    if width <= ROW_GRAM_WIDTHS:  # one vector a rating: the row form
        lanes = _row_lanes(width)
        return "\n".join([
            f"row_gram = row_gram_for({width})", "",
            "def buffer_size(width):", "    return 1", "",
            "def gram_size(width):", f"    return {lanes}", "",
            "def accumulate(start, stop, cols, vals, levels, table, a, z):",
            "    row_gram(start, stop, cols, vals, levels, table, a)"]) + "\n"
    d, w, step = width - 1, LANES, LANES * HALVES
    pairs = [(i, j) for i in range(width) for j in range(i, width)]
    acc = width * step  # the accumulators follow the copied block
    end = acc + len(pairs) * w
    lines = ["def buffer_size(width):", f"    return {end}", "",
             "def gram_size(width):", f"    return {width}", "",
             "def accumulate(start, stop, cols, vals, levels, table, a, z):",
             "    base, row_bytes, n_cols = table.ctypes.data, table.strides[0], cols.shape[0]",
             f"    for k in range({acc}, {end}):", "        z[k] = 0",
             f"    for first in range(start, stop, {step}):",
             f"        m = min({step}, stop - first)",
             "        for n in range(m):",
             f"            ahead = first + {PREFETCH_AHEAD} + n",
             "            if ahead < n_cols:",
             "                prefetch(base + cols[ahead] * row_bytes)",
             "            c = cols[first + n]"]
    lines += [f"            z[{i * step} + n] = table[c, {i}]" for i in range(d)]
    lines += [f"            z[{d * step} + n] = value(vals, levels, first + n) - table[c, {d}]",
              f"        for n in range(m, {step}):"]
    lines += [f"            z[{i * step} + n] = 0" for i in range(width)]
    lines += [f"        for n in range({w}):"]
    lines += [f"            z{i}_{h} = z[{i * step + h * w} + n]" for i in range(width)
              for h in range(HALVES)]
    lines += [f"            z[{acc + p * w} + n] += " + " + ".join(
        f"z{i}_{h} * z{j}_{h}" for h in range(HALVES)) for p, (i, j) in enumerate(pairs)]
    for p, (i, j) in enumerate(pairs):
        lines += [f"    s = z[{acc + p * w}]",
                  f"    for n in range({acc + p * w + 1}, {acc + (p + 1) * w}):",
                  "        s += z[n]", f"    a[{i}, {j}] = s"]
    return "\n".join(lines) + "\n"


def solve_one_source(d: int) -> str:
    """Python source of ``solve_one``: :func:`_solve_one` for exactly ``d`` unknowns, every
    loop unrolled and L held in named locals, so the compiler keeps it in registers instead
    of indexing a matrix in memory (at D = 11 it takes 300 ns per row against 455 ns; the
    same operations in the same order, so the same solution)."""
    L = ["def solve_one(a, lam, w, reg, prior, noise, shared, out, inv, t):",
         "    p = prior.shape[0] > 0", "    z = noise.shape[0] > 0", "    s = shared.shape[0] > 0"]
    for i in range(d):
        L.append(f"    g{i}_{i} = a[{i}, {i}] * lam + w * reg[{i}]"
                 f" + (shared[{i}, {i}] if s else 0.0)")
        for j in range(i + 1, d):
            L.append(f"    g{i}_{j} = a[{i}, {j}] * lam + (shared[{i}, {j}] if s else 0.0)")
        L.append(f"    r{i} = a[{i}, {d}] * lam + (prior[{i}] if p else 0.0)")
    for j in range(d):
        terms = "".join(f" - l{j}_{k} * l{j}_{k}" for k in range(j))
        L += [f"    q = g{j}_{j}{terms}", "    if not q > 0.0:", "        return False",
              f"    v{j} = 1.0 / np.sqrt(q)"]
        for i in range(j + 1, d):
            terms = "".join(f" - l{i}_{k} * l{j}_{k}" for k in range(j))
            L.append(f"    l{i}_{j} = (g{j}_{i}{terms}) * v{j}")
    for i in range(d):
        terms = "".join(f" - l{i}_{k} * y{k}" for k in range(i))
        L.append(f"    y{i} = (r{i}{terms}) * v{i}")
    for i in range(d - 1, -1, -1):
        terms = "".join(f" - l{k}_{i} * x{k}" for k in range(i + 1, d))
        L += [f"    x{i} = (y{i} + (noise[{i}] if z else 0.0){terms}) * v{i}", f"    out[{i}] = x{i}"]
    L.append("    return True")
    return "\n".join(L) + "\n"


SOLVE_LANES = 8
"""float64 entries a row update of :func:`_solve_one` handles at a time: one AVX-512 vector
(two AVX ones).  Its rows run in whole vectors, the lanes before the diagonal and past the
right-hand side included (they are never read), so the loop has no scalar remainder."""

PANEL = 8
"""Rows of U :func:`_solve_one` subtracts from each row below them at once."""


def _row_update_intrinsic(rows):
    """``row_update(a, i, j, start, stop)``: ``a[i, k] -= sum_{r < rows} a[j + r, i]
    a[j + r, k]`` for ``k`` in ``start:stop``, a whole number of :data:`SOLVE_LANES` vectors
    (``a``: float64, C order).  In LLVM IR for the same reason as :func:`gram_tile`: the
    compiler cannot tell that row ``i`` and rows ``j + r`` never overlap, so from Python loops
    it reloads every operand after each store."""
    from llvmlite import ir

    @numba.extending.intrinsic
    def row_update(typingctx, a, i, j, start, stop):
        if not isinstance(a, numba.types.Array):
            return None

        def codegen(context, builder, sig, args):
            base, lda = _ir_rows(context, builder, sig.args[0], args[0])
            i, j, start, stop = (context.cast(builder, v, t, numba.types.int64)
                                 for v, t in zip(args[1:], sig.args[1:]))
            i64 = ir.IntType(64)
            vec = ir.VectorType(ir.DoubleType(), SOLVE_LANES)
            fma = _ir_fma(builder, vec)
            dst = builder.gep(base, [builder.mul(i, lda)])
            srcs = [builder.gep(base, [builder.mul(builder.add(j, ir.Constant(i64, r)), lda)])
                    for r in range(rows)]
            coefs = [_ir_splat(builder, builder.fneg(builder.load(builder.gep(src, [i]))), vec)
                     for src in srcs]
            loop = _IRLoop(builder, "update", start, ir.Constant(i64, SOLVE_LANES))
            loop.test(stop)
            k = loop.k
            at = builder.bitcast(builder.gep(dst, [k]), vec.as_pointer())
            y = builder.load(at, align=8)
            for src, coef in zip(srcs, coefs):
                x = builder.load(builder.bitcast(builder.gep(src, [k]), vec.as_pointer()), align=8)
                y = builder.call(fma, [coef, x, y])
            builder.store(y, at, align=8)
            loop.close()
            return context.get_dummy_value()
        return numba.types.void(a, i, j, start, stop), codegen
    return row_update


def _solve_one(a, lam, w, reg, prior, noise, shared, out, inv, t):
    """Solve row ``a``'s system (``a``: its Gram's upper triangle, ``y``'s column last, with
    at least :func:`gram_size` columns: its row updates run in whole vectors) into
    ``out``, or draw from its Gaussian when ``noise`` has entries; false if not positive
    definite.  ``prior``/``noise`` are the row's entries or empty; ``shared`` (D, D), or
    empty, is added to the system matrix (the implicit loss's ``alpha0 X^T X``)."""
    d = out.shape[0]
    for i in range(d):
        for j in range(i, d):
            a[i, j] *= lam
            if shared.shape[0] > 0:
                a[i, j] += shared[i, j]
        a[i, i] += w * reg[i]
        a[i, d] *= lam
        if prior.shape[0] > 0:
            a[i, d] += prior[i]
    end = (d + SOLVE_LANES) // SOLVE_LANES * SOLVE_LANES  # whole vectors past column d
    for i in range(d):  # the lanes a row update reads but no solution depends on: zeros
        for k in range(i - i % SOLVE_LANES, i):
            a[i, k] = 0.0
        for k in range(d + 1, end):
            a[i, k] = 0.0
    # Cholesky of the system with its right-hand side as one more column, [A, b] -> [U, t]
    # with A = U^T U, U^T t = b, in place over A's upper triangle (1 / U_jj in inv), by
    # panels of PANEL rows: a panel's rows are scaled and subtracted from one another, then
    # from every row below it, all PANEL at once (:func:`row_update`): each entry below is
    # loaded and stored once per panel, and every operation runs along contiguous rows in
    # whole vectors, without sums across lanes (at D = 64, 2.4x faster than the dot-product
    # form, which sums each entry's products down a short row)
    for j0 in range(0, d, PANEL):
        j1 = min(j0 + PANEL, d)
        for j in range(j0, j1):
            s = a[j, j]
            if not s > 0.0:
                return False
            v = 1.0 / np.sqrt(s)
            inv[j] = v
            for k in range(j + 1, d + 1):
                a[j, k] *= v
            for i in range(j + 1, j1):
                row_update_1(a, i, j, i - i % SOLVE_LANES, end)
        for i in range(j1, d):
            if j1 - j0 == PANEL:
                row_update_panel(a, i, j0, i - i % SOLVE_LANES, end)
            else:
                for j in range(j0, j1):
                    row_update_1(a, i, j, i - i % SOLVE_LANES, end)
    for i in range(d):
        t[i] = a[i, d]
    if noise.shape[0] > 0:
        for i in range(d):
            t[i] += noise[i]
    for i in range(d - 1, -1, -1):  # U theta = t (+ z: theta + U^-1 z)
        s = t[i]
        for k in range(i + 1, d):
            s -= a[i, k] * t[k]
        t[i] = s * inv[i]
        out[i] = t[i]
    return True


def _solve_batch(g, lam, reg, prior, noise, out, first, last):
    """:func:`_solve_one` for the systems ``first:last`` of a batch of Grams ``g``
    (n, D+1, D+1) (the torch path's, upper triangle read), with prior precisions ``reg``
    (n, D) or (1, D); ``prior``/``noise`` (n, D) or (0, D).  Returns the number of systems
    not positive definite."""
    n, d = out.shape
    a = np.empty((d + 1, gram_size(d + 1)), dtype=np.float64)
    t = np.empty(d, dtype=np.float64)
    inv = np.empty(d, dtype=np.float64)
    no_prior = np.empty(0, dtype=prior.dtype)
    no_noise = np.empty(0, dtype=noise.dtype)
    no_shared = np.empty((0, 0), dtype=np.float64)
    failed = 0
    for r in range(first, last):
        for i in range(d + 1):
            for j in range(i, d + 1):
                a[i, j] = g[r, i, j]
        ok = _solve_one(a, lam, 1.0, reg[r] if reg.shape[0] > 1 else reg[0],
                        prior[r] if prior.shape[0] > 0 else no_prior,
                        noise[r] if noise.shape[0] > 0 else no_noise, no_shared, out[r], inv, t)
        failed += 0 if ok else 1
    return failed


def few_max(below: float, d: int) -> int:
    """Most ratings (exclusive) a row of ``d`` unknowns may have to be solved by
    :func:`_solve_few`: ``below * d``, within what the generic kernel's buffers hold (the
    tiles of an ``n x n`` matrix fit the Gram's when ``n < d``); 0 where a generated kernel
    runs, whose buffers are cut to its width."""
    if has_generated(d + 1):
        return 0
    return min(TILE_RATINGS, int(min(below, 1.0) * d))


def _solve_few(start, stop, cols, vals, levels, table, lam, w, reg, base, prior, out, with_sse, z,
               g, dh, s, a, inv, t):
    """Solve one row's system of :func:`_solve_rows` from its ``n = stop - start`` ratings
    through the ``n x n`` matrix of the Woodbury identity instead of the ``D x D`` one: with
    ``P = diag(base) + w diag(reg)`` (positive; ``base`` empty: 0) and ``s = P^-1 b``,
    ``(lam X^T X + P)^-1 b = s - P^-1 X^T (I / lam + X P^-1 X^T)^-1 X s``.
    Forming ``X P^-1 X^T`` costs ``n^2 D / 2`` against the Gram's ``n D^2 / 2``, and its
    Cholesky ``n^3 / 6`` against ``D^3 / 6``: fewer ratings than unknowns make both smaller.
    The columns of ``[X P^-1/2, .]`` with ``P^1/2 s`` below them are packed as the rows that
    :func:`_gram_tiles` sums, so the small matrix and its right-hand side ``X s`` come from
    the same register tiles as a Gram.  Returns the row's sum of squared errors at the
    solution when ``with_sse``, else 0.  ``z`` is :func:`_accumulate`'s buffer; ``g`` (n),
    ``dh``, ``s`` (D) float64 are work space; ``a``, ``inv``, ``t`` are :func:`_solve_one`'s,
    which factors the small matrix."""
    d = out.shape[0]
    n = stop - start
    lanes = TILE_BYTES // z.itemsize
    wp = _packed_width(n + 1, lanes)
    for i in range(d):
        dh[i] = 1.0 / np.sqrt(w * reg[i] + (base[i] if base.shape[0] > 0 else 0.0))  # P^-1/2
        s[i] = prior[i] if prior.shape[0] > 0 else 0.0
    # what the tiles read past the width: zeros (one contiguous fill of the block costs less
    # than the short strided runs past each packed row)
    z[:min(d, TILE_RATINGS) * wp] = 0.0
    rows_at, row_bytes = table.ctypes.data, table.strides[0]
    for j in range(n):
        prefetch_row_ahead(rows_at, row_bytes, cols, start + j)
        c = cols[start + j]
        yj = lam * (value(vals, levels, start + j) - table[c, d])
        for i in range(d):
            s[i] += yj * table[c, i]
    for i in range(d):
        s[i] *= dh[i]  # P^1/2 s = P^-1/2 b, which X P^-1/2 multiplies
    for first in range(0, d, TILE_RATINGS):  # D columns of X, TILE_RATINGS at a time
        m = min(TILE_RATINGS, d - first)
        for j in range(n):
            c = cols[start + j]
            for i in range(m):
                z[i * wp + j] = table[c, first + i] * dh[first + i]
        for i in range(m):
            z[i * wp + n] = s[first + i]
        gram_tiles(z, wp, m, n + 1, a, first == 0)
    for j in range(n):
        a[j, j] += 1.0 / lam
    # no prior, noise or shared matrix: empty views, nothing allocated a row
    _solve_one(a, 1.0, 0.0, reg, s[:0], s[:0], a[:0, :0], g[:n], inv, t)
    for i in range(d):
        t[i] = s[i]
    for j in range(n):  # theta = P^-1/2 (P^-1/2 b - (X P^-1/2)^T g)
        c = cols[start + j]
        gj = g[j]
        for i in range(d):
            t[i] -= table[c, i] * dh[i] * gj
    for i in range(d):
        t[i] *= dh[i]
        out[i] = t[i]
    sse = 0.0
    if with_sse:
        for j in range(n):
            c = cols[start + j]
            fit = table[c, d]
            for i in range(d):
                fit += table[c, i] * t[i]
            e = value(vals, levels, start + j) - fit
            sse += e * e
    return sse


def _solve_rows(indptr, cols, vals, levels, table, lam, reg, row_weight, prior, noise, shared,
                base, few, out, blocks, last_tile, slot, gram, sse, first, last):
    """Overwrite ``out[r]`` for every row ``r`` with ratings (``last_tile[r] >= 0``).

    Row ``r`` solves ``(lam sum x x^T + w_r diag(reg)) theta = lam sum x y + prior[r]`` with
    ``x = table[c, :D]``, ``y = value - table[c, D]``, ``w_r = row_weight[r]`` (a rating's
    value: :func:`value`).  ``prior`` is ``(n_rows, D)`` or ``(0, D)`` (none); ``noise``, when ``(n_rows, D)``, turns the solve
    into a draw ``theta + L^-T noise[r]``; ``shared`` (D, D) float64, when not empty, is added to
    every row's system matrix; ``base`` (D,), when not empty, is its diagonal, and ``shared``
    is diagonal.  A row in one tile with fewer than ``few`` ratings is solved by
    :func:`_solve_few` where its system allows (``shared`` none or diagonal, no ``noise``,
    every ``reg`` positive).  The ratings are ordered by (table tile, row):
    tile ``k``'s ratings of row ``r`` are ``indptr[k n_rows + r]:indptr[k n_rows + r + 1]``,
    and ``last_tile[r]`` is the last tile holding any (-1: none).  A row in one tile is
    solved as soon as its Gram is formed; a row over several adds each tile's Gram into
    ``gram[slot[r]]`` (float64) and is solved in its last tile's pass, so that a pass reads
    one tile of the table, which stays in cache.  ``blocks`` cuts the rows into ranges of
    about equal ratings; this call does ranges ``first:last`` (one thread's share, see
    :func:`run_blocks`).  ``sse``, when ``(n_rows,)`` (else empty), receives each solved
    row's sum of squared errors at its new ``out[r]``, from its Gram.  Returns the number of
    rows whose matrix was not positive definite (their ``out`` is left as it was).
    ``accumulate`` is this module's generic :func:`_accumulate`, or in a generated module
    the one for this table's width.
    """
    n_rows, d = out.shape
    n_tiles = (indptr.shape[0] - 1) // n_rows
    no_prior = np.empty(0, dtype=prior.dtype)
    no_noise = np.empty(0, dtype=noise.dtype)
    failed = 0
    z = np.zeros(buffer_size(d + 1), dtype=table.dtype)
    a = np.empty((gram_size(d + 1), gram_size(d + 1)), dtype=np.float64)
    t = np.empty(d, dtype=np.float64)
    inv = np.empty(d, dtype=np.float64)
    raw = np.empty((d + 1, d + 1), dtype=np.float64)
    # a row of fewer than ``few`` ratings is solved through the Woodbury identity where its
    # terms allow it: a diagonal prior precision, positive, and neither a draw nor a shared
    # matrix other than a diagonal one
    if (shared.shape[0] > 0 and base.shape[0] == 0) or noise.shape[0] > 0:
        few = 0
    for i in range(d):
        if not reg[i] > 0.0:
            few = 0
    fg = np.empty(few, dtype=np.float64)
    fdh = np.empty(d, dtype=np.float64)
    fs = np.empty(d, dtype=np.float64)
    for k in range(n_tiles):
        for b in range(first, last):
            for r in range(blocks[b], blocks[b + 1]):
                final = last_tile[r]
                if k > final:
                    continue
                n = indptr[k * n_rows + r + 1] - indptr[k * n_rows + r]
                if final == 0 and n < few and row_weight[r] > 0.0:
                    e = _solve_few(indptr[r], indptr[r + 1], cols, vals, levels, table, lam,
                                   row_weight[r], reg, base,
                                   prior[r] if prior.shape[0] > 0 else no_prior, out[r],
                                   sse.shape[0] > 0, z, fg, fdh, fs, a, inv, t)
                    if sse.shape[0] > 0:
                        sse[r] = e
                    continue
                accumulate(indptr[k * n_rows + r], indptr[k * n_rows + r + 1], cols, vals,
                           levels, table, a, z)
                if final > 0:
                    g = gram[slot[r]]
                    if k == 0:
                        g[:, :] = a[:d + 1, :d + 1]
                    else:
                        g += a[:d + 1, :d + 1]
                    if k < final:
                        continue
                    a[:d + 1, :d + 1] = g
                if sse.shape[0] > 0:
                    raw[:, :] = a[:d + 1, :d + 1]  # the solve overwrites a
                ok = _solve_one(a, lam, row_weight[r], reg,
                                prior[r] if prior.shape[0] > 0 else no_prior,
                                noise[r] if noise.shape[0] > 0 else no_noise, shared, out[r],
                                inv, t)
                failed += 0 if ok else 1
                if ok and sse.shape[0] > 0:
                    sse[r] = _row_error(raw, out[r])
    return failed


def _cg_prior(wreg, shared, v, out):
    """``out = (diag(wreg) + shared) v``: the part of a row's system matrix that its ratings
    do not make (``shared`` empty: none)."""
    d = v.shape[0]
    for i in range(d):
        out[i] = wreg[i] * v[i]
    if shared.shape[0] > 0:
        for i in range(d):
            s = 0.0
            for j in range(d):
                s += shared[i, j] * v[j]
            out[i] += s


def _cg_pass(x, y, m, with_y, v, acc):
    """``acc = sum_n x_n (with_y y_n - x_n . v)`` over the row's first ``m`` gathered ratings
    ``x`` (``v``, ``acc``: the table's precision), in one pass.  Four ratings at a time: their
    dot products are independent (one waiting on its sum does not stall the others) and
    ``acc`` is read and written once for the four (at D = 64, 2.7x faster than one by one)."""
    d = v.shape[0]
    for i in range(d):
        acc[i] = 0.0
    n = 0
    while n + 4 <= m:
        x0, x1, x2, x3 = x[n], x[n + 1], x[n + 2], x[n + 3]
        s0 = y[n] * with_y
        s1 = y[n + 1] * with_y
        s2 = y[n + 2] * with_y
        s3 = y[n + 3] * with_y
        for i in range(d):
            vi = v[i]
            s0 -= x0[i] * vi
            s1 -= x1[i] * vi
            s2 -= x2[i] * vi
            s3 -= x3[i] * vi
        for i in range(d):
            acc[i] += s0 * x0[i] + s1 * x1[i] + s2 * x2[i] + s3 * x3[i]
        n += 4
    while n < m:
        xn = x[n]
        s = y[n] * with_y
        for i in range(d):
            s -= xn[i] * v[i]
        for i in range(d):
            acc[i] += s * xn[i]
        n += 1


def _cg_rows(indptr, cols, vals, levels, table, lam, reg, row_weight, prior, shared, steps,
             out, blocks, first, last):
    """``steps`` conjugate-gradient steps on each row's system, from the row's current
    ``out[r]``, for every row with ratings, rows ``blocks[first]:blocks[last]``.

    The system is :func:`_solve_rows`'s, ``A theta = b`` with ``A = lam X^T X + w_r diag(reg)
    (+ shared)``, ``b = lam X^T y + prior[r]``, but never formed: each step needs one product
    ``A p``, a pass over the row's ratings gathered once into a small block (``2 m D``
    multiply-adds against the Gram's ``m D^2 / 2``).  Conjugate gradient started at the
    current row minimizes the row's quadratic over a growing subspace that contains the start,
    so each step lowers it and the objective never increases; after ``D`` steps it is the
    exact solution up to rounding.  Returns the number of rows whose curvature ``p^T A p`` was not positive (their ``out``
    is left as it was)."""
    n_rows, d = out.shape
    n_tiles = (indptr.shape[0] - 1) // n_rows
    cap = 1
    for r in range(blocks[first], blocks[last]):
        m = 0
        for k in range(n_tiles):
            m += indptr[k * n_rows + r + 1] - indptr[k * n_rows + r]
        cap = max(cap, m)
    x = np.empty((cap, d), dtype=table.dtype)
    y = np.empty(cap, dtype=table.dtype)
    t = np.empty(d, dtype=np.float64)
    res = np.empty(d, dtype=np.float64)
    p = np.empty(d, dtype=np.float64)
    ap = np.empty(d, dtype=np.float64)
    acc = np.empty(d, dtype=table.dtype)
    wreg = np.empty(d, dtype=np.float64)
    v32 = np.empty(d, dtype=table.dtype)
    unit = np.ones(1, dtype=table.dtype)
    one = unit[0]
    zero = one - one
    base, row_bytes = table.ctypes.data, table.strides[0]
    failed = 0
    for r in range(blocks[first], blocks[last]):
        m = 0
        for k in range(n_tiles):
            stop = indptr[k * n_rows + r + 1]
            for n in range(indptr[k * n_rows + r], stop):
                prefetch_row_ahead(base, row_bytes, cols, n)
                c = cols[n]
                xm = x[m]
                for i in range(d):
                    xm[i] = table[c, i]
                y[m] = value(vals, levels, n) - table[c, d]
                m += 1
        if m == 0:
            continue
        for i in range(d):
            wreg[i] = row_weight[r] * reg[i]
            t[i] = out[r, i]
        # the residual b - A t = lam X^T (y - X t) + prior - (diag(wreg) + shared) t
        _cg_prior(wreg, shared, t, ap)
        for i in range(d):
            v32[i] = t[i]
        _cg_pass(x, y, m, one, v32, acc)
        for i in range(d):
            res[i] = (prior[r, i] if prior.shape[0] > 0 else 0.0) - ap[i] + lam * acc[i]
        rr = 0.0
        for i in range(d):
            p[i] = res[i]
            rr += res[i] * res[i]
        ok = True
        for _ in range(steps):
            if rr == 0.0:
                break
            for i in range(d):  # A p = lam X^T X p + (diag(wreg) + shared) p
                v32[i] = p[i]
            _cg_pass(x, y, m, zero, v32, acc)
            _cg_prior(wreg, shared, p, ap)
            for i in range(d):
                ap[i] -= lam * acc[i]
            pap = 0.0
            for i in range(d):
                pap += p[i] * ap[i]
            if not pap > 0.0:
                ok = False
                break
            alpha = rr / pap
            new = 0.0
            for i in range(d):
                t[i] += alpha * p[i]
                res[i] -= alpha * ap[i]
                new += res[i] * res[i]
            for i in range(d):
                p[i] = res[i] + (new / rr) * p[i]
            rr = new
        if not ok:
            failed += 1
        else:
            for i in range(d):
                out[r, i] = t[i]
    return failed


def _row_error(g, theta):
    """``y^T y - 2 theta^T X^T y + theta^T X^T X theta`` from the upper triangle of the Gram
    ``g = [X, y]^T [X, y]``."""
    d = theta.shape[0]
    total = g[d, d]
    for i in range(d):
        fit = g[i, i] * theta[i]
        for j in range(i + 1, d):
            fit += 2.0 * g[i, j] * theta[j]
        total += theta[i] * (fit - 2.0 * g[i, d])
    return total


def _squared_errors(indptr, cols, vals, levels, table, theta, lo, hi, blocks, sums, first, last):
    """Per block of rows, sums over its ratings of ``(r - r-hat)^2``, raw and with ``r-hat``
    clipped to ``[lo, hi]``, into ``sums`` (n_blocks, 2) (summed by the caller in a fixed
    order, so the total does not depend on the threads), for the blocks ``first:last``; ``r-hat = theta[row] . table[col]``
    (``theta = [u, b, 1]``, ``table``'s last column the offset); ratings ordered as for
    :func:`_solve_rows`."""
    d1 = table.shape[1]
    n_rows = theta.shape[0]
    n_tiles = (indptr.shape[0] - 1) // n_rows
    base, row_bytes = table.ctypes.data, table.strides[0]
    for b in range(first, last):
        raw = 0.0
        clipped = 0.0
        for r in range(blocks[b], blocks[b + 1]):
            for k in range(n_tiles):
                for n in range(indptr[k * n_rows + r], indptr[k * n_rows + r + 1]):
                    prefetch_row_ahead(base, row_bytes, cols, n)  # as the steps read
                    c = cols[n]
                    fit = 0.0
                    for i in range(d1):
                        fit += theta[r, i] * table[c, i]
                    y = value(vals, levels, n)
                    e = y - fit
                    raw += e * e
                    e = y - min(max(fit, lo), hi)
                    clipped += e * e
        sums[b, 0] = raw
        sums[b, 1] = clipped
    return 0


MAX_LEVELS = 256
"""Most distinct rating values stored as one-byte codes (MovieLens has 10); past it the
layout holds the values themselves."""


def _value(vals, levels, n):
    """Rating ``n``'s value: ``levels[vals[n]]`` when the layout holds codes, else ``vals[n]``."""
    return levels[np.intp(vals[n])] if levels.shape[0] > 0 else vals[n]


def _rating_levels(vals, index, n_taken, levels):
    """The sorted distinct values of the taken ratings into ``levels`` (``MAX_LEVELS``
    long); their number, or -1 when there are more."""
    n = 0
    for t in range(n_taken):
        v = vals[_rating(index, t)]
        k = np.searchsorted(levels[:n], v)
        if k < n and levels[k] == v:
            continue
        if n == levels.shape[0]:
            return -1
        for j in range(n, k, -1):
            levels[j] = levels[j - 1]
        levels[k] = v
        n += 1
    return n


def _time_targets(user, item, key, dev, rating, bin_bias, drift, mu, user_bias, item_bias,
                  user_factors, item_factors, target, residual, first, last):
    """For the time terms (:mod:`rec.als.time_biases`), ratings ``first..last-1`` of the
    training order: ``target = r - o`` with ``o = c_{n,bin} + alpha_m dev`` (``key`` or
    ``dev`` empty: that term off), and, when ``residual`` is not empty, ``residual = target -
    (mu + b_m + c_n + u_m . v_n)``.  One pass, no (ratings, K) temporaries.  Returns 0."""
    k = user_factors.shape[1]
    with_residual = residual.shape[0] > 0
    for i in range(first, last):
        m, n = user[i], item[i]
        o = 0.0
        if key.shape[0] > 0:
            o += bin_bias[key[i]]
        if dev.shape[0] > 0:
            o += drift[m] * dev[i]
        t = rating[i] - o
        target[i] = t
        if with_residual:
            s = mu + user_bias[m] + item_bias[n]
            for d in range(k):
                s += user_factors[m, d] * item_factors[n, d]
            residual[i] = t - s
    return 0


def _time_sums(user, item, key, dev, rating, bin_bias, drift, mu, user_bias, item_bias,
               user_factors, item_factors, key_sums, person_sums, first, last):
    """For the time terms' steps (:mod:`rec.als.time_biases`), ratings ``first..last-1``:
    each rating's residual ``e = r - (mu + b_m + c_n + c_{n,bin} + alpha_m dev + u_m . v_n)``
    (``key`` or ``dev`` empty: that term off) added to ``key_sums[key]`` and, ``dev e`` too,
    to ``person_sums[0, m]`` and ``person_sums[1, m]`` (this share's own float64 buffers;
    an empty one is skipped).  No residual is stored.  Returns ``sum e^2``."""
    k = user_factors.shape[1]
    with_bins, with_drift = key.shape[0] > 0, dev.shape[0] > 0
    by_key, by_person = key_sums.shape[0] > 0, person_sums.shape[1] > 0
    total = 0.0
    base, row_bytes = item_factors.ctypes.data, item_factors.strides[0]
    for i in range(first, last):
        prefetch_ahead(base, row_bytes, item, i)  # the movies come at random, so their bins
        if with_bins:
            prefetch_ahead(bin_bias.ctypes.data, bin_bias.strides[0], key, i)
            if by_key:
                prefetch_ahead(key_sums.ctypes.data, key_sums.strides[0], key, i)
        m, n = user[i], item[i]
        s = mu + user_bias[m] + item_bias[n]
        if with_bins:
            s += bin_bias[key[i]]
        if with_drift:
            s += drift[m] * dev[i]
        for d in range(k):
            s += user_factors[m, d] * item_factors[n, d]
        e = rating[i] - s
        if by_key:
            key_sums[key[i]] += e
        if by_person:
            person_sums[0, m] += e
            person_sums[1, m] += dev[i] * e
        total += e * e
    return total


def _shift_person_sums(user, key, dev, change, person_sums, first, last):
    """Ratings ``first..last-1``: the residuals' person sums of :func:`_time_sums` after the
    bins moved by ``change`` (each rating's residual falls by its (movie, bin)'s change):
    ``person_sums[0, m] -= dc`` and ``person_sums[1, m] -= dev dc``.  No factor is read, so
    this costs a fraction of a second pass of sums.  Returns 0."""
    for i in range(first, last):
        prefetch_ahead(change.ctypes.data, change.strides[0], key, i)
        m, dc = user[i], change[key[i]]
        person_sums[0, m] -= dc
        person_sums[1, m] -= dev[i] * dc
    return 0


def _gather(source, index, out, first, last):
    """``out[i] = source[index[i]]`` for ``i`` in ``first..last-1``, asking for the entry
    :data:`PREFETCH_AHEAD` further on meanwhile (``source`` is one value a rating: at
    ML-32M's shape, 115 MB read at random).  Returns 0."""
    base, step = source.ctypes.data, source.strides[0]
    for i in range(first, last):
        prefetch_ahead(base, step, index, i)
        out[i] = source[index[i]]
    return 0


def _rating(index, t):
    """The position of the ``t``-th rating taken: ``index[t]``, or ``t`` for an empty index."""
    return index[t] if index.shape[0] > 0 else t


def _layout_degree(rows, index, n_taken, degree):
    """Count the taken ratings of each row into ``degree`` (zeroed)."""
    for t in range(n_taken):
        degree[rows[_rating(index, t)]] += 1


def _layout_key(r, c, n_rows, tile_width, split):
    """Where a rating of row ``r``, column ``c`` goes: ``tile n_rows + r`` (tile 0 unless the
    row is ``split``), :func:`rec.als.groups.tile_of`'s rule."""
    return (c // tile_width if split[r] else 0) * n_rows + r


def _layout_count(rows, cols, index, n_taken, n_rows, tile_width, split, counts):
    """Ratings per (tile, row) key into ``counts`` (zeroed)."""
    for t in range(n_taken):
        i = _rating(index, t)
        counts[_layout_key(rows[i], cols[i], n_rows, tile_width, split)] += 1


def _layout_fill(rows, cols, vals, index, n_taken, n_rows, tile_width, split, cursor,
                 levels, out_cols, out_vals):
    """Counting sort of the taken ratings by (tile, row) into ``out_cols``/``out_vals``
    (stable: a key's ratings keep their order), key ``k``'s next place at ``cursor[k]``,
    which it advances (so a layout can be filled block by block); with ``levels`` (sorted,
    not empty), ``out_vals`` receives each value's place in it.  Reads the ratings where they
    lie: no copy of the subset, no array of keys."""
    for t in range(n_taken):
        i = _rating(index, t)
        key = _layout_key(rows[i], cols[i], n_rows, tile_width, split)
        k = cursor[key]
        out_cols[k] = cols[i]
        if levels.shape[0] > 0:
            out_vals[k] = np.searchsorted(levels, vals[i])
        else:
            out_vals[k] = vals[i]
        cursor[key] = k + 1


def _counting_order(keys, offsets, perm):
    """Rating ids in stable key order into ``perm`` (int32): key ``k``'s ratings from
    ``offsets[k]`` on, in the order they come.  One pass, no temporaries: the torch path's
    blockwise sort (:func:`rec.als.groups.row_order`) spends O(keys) per block, which at two
    million people and 40 million ratings dominated the setup."""
    cursor = offsets.copy()
    for i in range(keys.shape[0]):
        k = keys[i]
        perm[cursor[k]] = i
        cursor[k] += 1


def _pad_rows(members, width, degree, offsets, perm, cols, vals, sentinel, out_cols, out_vals):
    """The torch path's padded chunk of ``members``: row ``j``'s ratings (``offsets``, then
    ``perm`` when not empty) in ``out_cols[j, :degree]`` / ``out_vals[j, :degree]``, the rest
    ``sentinel`` and 0 (see :func:`rec.als.groups._pad`)."""
    for j in range(members.shape[0]):
        r = members[j]
        start, n = offsets[r], min(degree[r], width)
        for s in range(width):
            if s < n:
                i = start + s
                if perm.shape[0] > 0:
                    i = perm[i]
                out_cols[j, s] = cols[i]
                out_vals[j, s] = vals[i]
            else:
                out_cols[j, s] = sentinel
                out_vals[j, s] = 0


def _copy_row_intrinsic():
    """``copy_row(out, o, table, c, n)``: the first ``n`` entries of ``table``'s row ``c``
    into ``out``'s entries ``o:o + n`` (both C-contiguous, of one dtype) as one ``memcpy``.
    Numba left :func:`_accumulate`'s copy a loop of single entries (it cannot tell that the
    two arrays do not overlap), which at rows of 65 entries took as long as the Gram.  The
    conjugate-gradient pass keeps its loop: there the call measured slower."""
    from llvmlite import ir
    from numba.core import cgutils

    @numba.extending.intrinsic
    def copy_row(typingctx, out, o, table, c, n):
        if not (isinstance(out, numba.types.Array) and isinstance(table, numba.types.Array)
                and out.dtype == table.dtype):
            return None

        def codegen(context, builder, sig, args):
            dst, src = (context.make_array(t)(context, builder, a)
                        for t, a in ((sig.args[0], args[0]), (sig.args[2], args[2])))
            o, c, n = (context.cast(builder, args[i], sig.args[i], numba.types.int64)
                       for i in (1, 3, 4))
            elem = context.get_data_type(sig.args[0].dtype)
            i8p = ir.IntType(8).as_pointer()
            to = builder.bitcast(builder.gep(builder.bitcast(dst.data, elem.as_pointer()), [o]),
                                 i8p)
            at = builder.gep(builder.bitcast(src.data, i8p),
                             [builder.mul(c, builder.extract_value(src.strides, 0))])
            cgutils.raw_memcpy(builder, to, at, n, context.get_abi_sizeof(elem))
            return context.get_dummy_value()
        return numba.types.void(out, o, table, c, n), codegen
    return copy_row


def _prefetch_intrinsic():
    """``prefetch(address)``: LLVM's prefetch hint (read, keep in all cache levels) for the
    cache line at the integer ``address``; no instruction where the CPU has none."""
    from llvmlite import ir

    @numba.extending.intrinsic
    def prefetch(typingctx, address):
        if not isinstance(address, numba.types.Integer):
            return None

        def codegen(context, builder, sig, args):
            _ir_prefetch(builder, builder.inttoptr(args[0], ir.IntType(8).as_pointer()))
            return context.get_dummy_value()
        return numba.types.void(address), codegen
    return prefetch


def _prefetch_row_ahead(base, row_bytes, index, i):
    """Ask for every cache line of the table row ``index[i + PREFETCH_AHEAD]`` (``row_bytes``
    a row, the table at address ``base``) when there is one: the passes over a layout's
    ratings read a wide row at random each, and a row past its own ratings is the next
    row's, read next."""
    if i + PREFETCH_AHEAD < index.shape[0]:
        at = base + index[i + PREFETCH_AHEAD] * row_bytes
        for line in range(0, row_bytes, 64):
            prefetch(at + line)


def _prefetch_ahead(base, stride, index, i):
    """Ask for the entry ``index[i + PREFETCH_AHEAD]`` of the array at address ``base``
    (``stride`` bytes an entry) when there is one: a pass that reads an array at random in
    ``index``'s order asks for what it will read :data:`PREFETCH_AHEAD` steps on."""
    if i + PREFETCH_AHEAD < index.shape[0]:
        prefetch(base + index[i + PREFETCH_AHEAD] * stride)


if AVAILABLE:
    import numba.extending

    prefetch = _prefetch_intrinsic()
    prefetch_ahead = numba.njit(cache=True, nogil=True, inline="always")(_prefetch_ahead)
    prefetch_row_ahead = numba.njit(cache=True, nogil=True, inline="always")(_prefetch_row_ahead)
    copy_row = _copy_row_intrinsic()
    _jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    gram_tile = _gram_tile_intrinsic(TILE_BYTES)
    gram_tile_wide = _gram_tile_intrinsic(TILE_BYTES, TILE_VECTORS)
    gram_tile_2 = _gram_tile_intrinsic(TILE_BYTES // 2)
    gram_tile_4 = _gram_tile_intrinsic(TILE_BYTES // 4)
    gram_tile_8 = _gram_tile_intrinsic(TILE_BYTES // 8)
    row_update_1 = _row_update_intrinsic(1)
    row_update_panel = _row_update_intrinsic(PANEL)
    _packed_width = _jit(_packed_width)
    accumulate = _jit(_accumulate)
    gram_size = _jit(_gram_size)
    buffer_size = _jit(_buffer_size)
    _solve_one = _jit(_solve_one)
    solve_batch = _jit(_solve_batch)
    _row_error = numba.njit(cache=True, nogil=True)(_row_error)
    gram_tiles = _jit(_gram_tiles)
    _solve_few = _jit(_solve_few)
    _generic_solve_rows = _jit(_solve_rows)
    _cg_prior = _jit(_cg_prior)
    _cg_pass = _jit(_cg_pass)
    cg_rows = _jit(_cg_rows)
    squared_errors = _jit(_squared_errors)
    _rating = numba.njit(cache=True, nogil=True)(_rating)
    value = numba.njit(cache=True, nogil=True, inline="always")(_value)
    rating_levels = numba.njit(cache=True, nogil=True)(_rating_levels)
    _layout_key = numba.njit(cache=True, nogil=True)(_layout_key)
    layout_degree = numba.njit(cache=True, nogil=True)(_layout_degree)
    layout_count = numba.njit(cache=True, nogil=True)(_layout_count)
    layout_fill = numba.njit(cache=True, nogil=True)(_layout_fill)
    counting_order = numba.njit(cache=True, nogil=True)(_counting_order)
    pad_rows = numba.njit(cache=True, nogil=True)(_pad_rows)
    time_targets = _jit(_time_targets)
    time_sums = _jit(_time_sums)
    shift_person_sums = _jit(_shift_person_sums)
    gather = numba.njit(cache=True, nogil=True)(_gather)
else:  # pragma: no cover
    _generic_solve_rows = cg_rows = squared_errors = layout_degree = layout_count = layout_fill = None
    rating_levels = solve_batch = counting_order = pad_rows = time_targets = None
    time_sums = shift_person_sums = gather = None

UNROLLED_WIDTHS = 24
"""Widest ``[x, y]`` (D + 1 entries) given a generated :func:`accumulate_source`: its code
grows as ``width^2`` (compiling took 8 s at width 12 and 31 s at 24, once per width); past
it the register-blocked :func:`_accumulate` runs, one compiled function for every width."""

_COMPILED: dict[int, object] = {}


def has_generated(width: int) -> bool:
    """Whether tables of ``width`` columns (``[x, offset]``) get a generated kernel; past
    :data:`UNROLLED_WIDTHS` the register-blocked :func:`_accumulate` runs."""
    return width <= UNROLLED_WIDTHS


def solve_rows(width: int):
    """The compiled :func:`_solve_rows` for tables of ``width`` columns (``[x, offset]``).

    Up to :data:`UNROLLED_WIDTHS` it runs a generated ``accumulate``: its module (the
    generated function, then this module's :func:`_solve_rows` as it is written here) is
    written once under :func:`cache_dir`, so that Numba's disk cache keeps its compiled
    code between processes (8-30 s to compile, once per width)."""
    if not has_generated(width):
        return _generic_solve_rows
    if width not in _COMPILED:
        _COMPILED[width] = _load_generated(width).solve_rows
    return _COMPILED[width]


def runs_on(device) -> bool:
    """Whether the compiled kernels can run on ``device`` (a torch device or its name)."""
    return AVAILABLE and str(device).split(":")[0] == "cpu"


def cache_dir() -> Path:
    """Where generated kernels are written: ``$REC_KERNEL_CACHE``, else
    ``$XDG_CACHE_HOME/rec/kernels`` (``~/.cache/rec/kernels``)."""
    root = os.environ.get("REC_KERNEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rec" / "kernels"


def _load_generated(width: int):
    text = ("import numpy as np\nfrom numba import njit\n"
            "from rec.als.kernel import (_row_error, _solve_few, prefetch, row_gram_for,\n"
            "                            value)\n\n"
            f"{accumulate_source(width)}\n\n{solve_one_source(width - 1)}\n\n"
            f"{inspect.getsource(_solve_rows)}\n"
            "_jit = njit(cache=True, nogil=True, fastmath={'reassoc', 'contract'})\n"
            "accumulate = _jit(accumulate)\nbuffer_size = _jit(buffer_size)\n"
            "gram_size = _jit(gram_size)\n"
            "_solve_one = _jit(solve_one)\nsolve_rows = _jit(_solve_rows)\n")
    called = "".join(inspect.getsource(f.py_func) for f in (_row_error, value, _solve_few,
                                                             _solve_one)) + \
        "".join(inspect.getsource(f) for f in (_prefetch_intrinsic, _ir_prefetch,
                                               _prefetch_row_ahead, _row_gram_intrinsic))
    digest = hashlib.sha256((text + called).encode()).hexdigest()
    name = f"rec_kernel_w{width}_{digest[:12]}"
    try:
        path = cache_dir() / f"{name}.py"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text)
            partial.replace(path)  # atomic: a process never reads half a file
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Numba's cached code refers to its functions' module by name
        spec.loader.exec_module(module)
    except OSError:  # no writable cache: compile in memory, once per process
        module = types.ModuleType(name)
        exec(compile(text.replace("cache=True", "cache=False"), name, "exec"), module.__dict__)
    return module


def run_blocks(fn, n_blocks: int, threads: int, pool, *args) -> int:
    """``fn(*args, first, last)`` over ``n_blocks`` blocks, cut into ``threads`` contiguous
    shares run at once on ``pool``'s threads (the kernels release the GIL); the sum of the
    results.

    Python threads, not Numba's own thread pool: that pool's threads spin between calls, as
    torch's OpenMP threads do, and on a machine with as many cores as threads the two pools
    took turns starving each other (epochs 1.5-5x slower in one process, measured).
    """
    return sum(run_shares(lambda s, a, b: fn(*args, a, b), n_blocks, threads, pool))


def run_shares(fn, n_blocks: int, threads: int, pool) -> list:
    """As :func:`run_blocks`, for passes whose shares add into buffers of their own:
    ``fn(s, first, last)`` for share ``s`` (below ``threads``); the results."""
    bounds = np.linspace(0, n_blocks, max(1, threads) + 1).astype(np.int64)
    shares = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if len(shares) == 1 or pool is None:
        return [fn(s, a, b) for s, (a, b) in enumerate(shares)]
    return [f.result() for f in [pool.submit(fn, s, a, b) for s, (a, b) in enumerate(shares)]]
