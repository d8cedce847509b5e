"""CPU kernels of the permutohedral lattice, compiled with numba; :mod:`toco_ray.losses.permutohedral` uses
them for CPU tensors when numba is installed and falls back to its pure-PyTorch operations otherwise.

Why hand-written loops: on the CPU the lattice is memory-bound, and PyTorch spends most of its time there in
temporaries (each blur step of the pure-PyTorch path makes about a dozen passes over the M×K lattice, a step
here makes one) and in binary searches (``searchsorted`` for every neighbour, where two sorted arrays can be
merged in one pass). The loops also skip the lattice rows that cannot change the output (below). They compute
the same splat, blur and slice as the pure-PyTorch path, on the same lattice in the same order;
``tests/losses/test_permutohedral.py`` checks that both agree.

Pruning: a blur step only needs the rows that hold mass by then (reached from a splatted vertex by the steps so
far) *and* that can still reach a splatted vertex by the remaining steps, the only rows the slice reads. Other
rows are zero or never read, so leaving them out changes nothing; on noise images it skips about half the rows.
Each step writes every row of a compact buffer holding just its rows, so nothing needs zeroing: a row that the
previous step did not compute holds no mass yet and is read from that buffer's last row, kept zero (see
:func:`blur_plan`).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import prange

_JIT = {"cache": True, "nogil": True}  # compiled once, cached beside this file
_CHUNK = 4096  # points per parallel task in the per-point loops (scratch arrays are allocated per task)


@numba.njit(parallel=True, **_JIT)
def embed(features: np.ndarray, elevation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-point loop of ``permutohedral._embed``: remainder-0 vertex, rank and barycentric weights, P×(d+1).

    ``features`` P×d float64, ``elevation`` the (d+1)×d elevation matrix.
    """
    p, dim = features.shape
    d1 = dim + 1
    rem0 = np.empty((p, d1), np.int64)
    rank = np.empty((p, d1), np.int64)
    bary = np.empty((p, d1), np.float64)
    for chunk in prange((p + _CHUNK - 1) // _CHUNK):
        elevated, offset, delta = np.empty(d1), np.empty(d1), np.empty(d1 + 1)
        for n in range(chunk * _CHUNK, min(p, (chunk + 1) * _CHUNK)):
            total = 0
            for i in range(d1):
                x = 0.0
                for m in range(dim):
                    x += elevation[i, m] * features[n, m]
                rounded = np.round(x / d1)
                elevated[i] = x
                offset[i] = x - rounded * d1
                rem0[n, i] = int(rounded) * d1
                total += int(rounded)
            delta[:] = 0.0
            for i in range(d1):
                larger = 0
                for j in range(d1):
                    if offset[j] > offset[i] or (offset[j] == offset[i] and j < i):
                        larger += 1
                r = larger + total
                wrap = (1 if r < 0 else 0) - (1 if r > dim else 0)
                rank[n, i] = r + d1 * wrap
                rem0[n, i] += d1 * wrap
                step = (elevated[i] - rem0[n, i]) / d1
                delta[dim - rank[n, i]] += step
                delta[dim - rank[n, i] + 1] -= step
            delta[0] += 1.0 + delta[d1]
            for i in range(d1):
                bary[n, i] = delta[i]
    return rem0, rank, bary


@numba.njit(**_JIT)
def key_range(rem0: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis min and max of the simplex-vertex keys that ``permutohedral._simplex_vertices`` would build."""
    p, d1 = rem0.shape
    low = np.full(d1 - 1, np.iinfo(np.int64).max)
    high = np.full(d1 - 1, np.iinfo(np.int64).min)
    for n in range(p):
        for r in range(d1):
            for i in range(d1 - 1):
                key = rem0[n, i] + (r if rank[n, i] <= d1 - 1 - r else r - d1)
                low[i] = min(low[i], key)
                high[i] = max(high[i], key)
    return low, high


@numba.njit(parallel=True, **_JIT)
def pack_codes(rem0, rank, low: np.ndarray, strides: np.ndarray, set_stride: int, num_points: int) -> np.ndarray:
    """The int64 codes of ``permutohedral._pack_keys``: P×(d+1), vertex r of point n's simplex."""
    p, d1 = rem0.shape
    codes = np.empty((p, d1), np.int64)
    for n in prange(p):
        for r in range(d1):
            code = (n // num_points) * set_stride
            for i in range(d1 - 1):
                key = rem0[n, i] + (r if rank[n, i] <= d1 - 1 - r else r - d1)
                code += (key - low[i]) * strides[i]
            codes[n, r] = code
    return codes


@numba.njit(parallel=True, **_JIT)
def _neighbour_index(codes: np.ndarray, steps: np.ndarray) -> np.ndarray:
    # Index of codes[i] ± steps[j] in the sorted unique ``codes`` (M if absent), (d+1)×2×M int32: one merge pass
    # per direction and sign, since the shifted codes are sorted too.
    m, n_steps = codes.size, steps.size
    out = np.empty((n_steps, 2, m), np.int32)
    for task in prange(2 * n_steps):
        j, sign = task // 2, task % 2
        shift = steps[j] if sign == 0 else -steps[j]
        k = 0
        for i in range(m):
            target = codes[i] + shift
            while k < m and codes[k] < target:
                k += 1
            out[j, sign, i] = k if k < m and codes[k] == target else m
    return out


def _sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # PyTorch sorts int64 with a radix sort: on random codes ~5× faster than numpy's stable sort (timsort).
    result = torch.sort(torch.from_numpy(values), stable=True)
    return result.values.numpy(), result.indices.numpy()


def _first_of_runs(ordered: np.ndarray) -> np.ndarray:
    first = np.empty(ordered.size, np.bool_)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def build_lattice(codes: np.ndarray, steps: list[int]) -> dict[str, np.ndarray]:
    """Lattice of the splatted vertices and their one-ring, hashed by sorting.

    Args:
        codes: P×(d+1) int64 packed keys of every point's simplex vertices.
        steps: the d+1 code offsets of the lattice directions.

    Returns:
        ``lattice_codes`` (M, sorted); ``vertex_index`` P×(d+1) into them; ``neighbours`` (d+1)×2×M int32
        (index of the +step and −step neighbour, M where absent); for the splat, ``vertex_rank`` P×(d+1) (index
        among the V splatted vertices, sorted), ``splatted`` (their lattice indices), ``order`` and ``offsets``
        (the point-vertex pairs ``(p·(d+1) + v)`` grouped by vertex, vertex u's in
        ``order[offsets[u]:offsets[u+1]]``).
    """
    flat = codes.reshape(-1)
    ordered, order = _sorted(flat)
    first = _first_of_runs(ordered)
    vertex_rank = np.empty(flat.size, np.int64)
    vertex_rank[order] = np.cumsum(first) - 1
    splatted_codes = ordered[first]
    offsets = np.append(np.flatnonzero(first), flat.size)
    ring = np.concatenate([splatted_codes] + [splatted_codes + s for s in steps] + [splatted_codes - s for s in steps])
    ring = np.sort(ring, kind="stable")  # timsort merges the 2d+3 sorted runs, ~7× faster than a radix sort
    lattice_codes = ring[_first_of_runs(ring)]
    splatted = np.searchsorted(lattice_codes, splatted_codes)
    neighbours = _neighbour_index(lattice_codes, np.array(steps, np.int64))
    return {
        "lattice_codes": lattice_codes,
        "vertex_index": splatted[vertex_rank].reshape(codes.shape),
        "neighbours": neighbours,
        "vertex_rank": vertex_rank.reshape(codes.shape),
        "splatted": splatted,
        "order": order,
        "offsets": offsets,
    }


@numba.njit(parallel=True, **_JIT)
def _compact_plan(neighbours: np.ndarray, directions: np.ndarray, splatted: np.ndarray) -> tuple[np.ndarray, ...]:
    n_steps, _, m = neighbours.shape
    # Forward: mass[t, i], row i holds mass after t steps. Backward: need[t, i], row i is read after t steps.
    mass = np.zeros((n_steps + 1, m + 1), np.bool_)
    need = np.zeros((n_steps + 1, m + 1), np.bool_)
    for i in splatted:
        mass[0, i] = True
        need[n_steps, i] = True
    for t in range(n_steps):
        nb = neighbours[directions[t]]
        for i in prange(m):
            mass[t + 1, i] = mass[t, i] or mass[t, nb[0, i]] or mass[t, nb[1, i]]
    for t in range(n_steps - 1, -1, -1):
        nb = neighbours[directions[t]]
        for i in prange(m):
            need[t, i] = need[t + 1, i] or need[t + 1, nb[0, i]] or need[t + 1, nb[1, i]]
    # Step t computes the rows with mass after it that are still read, in lattice order. where[i]: position of
    # row i in the previous step's buffer, or that buffer's zero last row if the previous step did not compute it.
    where = np.full(m + 1, splatted.size, np.int32)
    where[splatted] = np.arange(splatted.size, dtype=np.int32)
    sizes = np.zeros(n_steps, np.int64)
    steps = np.empty((3, n_steps * m), np.int32)
    total = 0
    for t in range(n_steps):
        nb = neighbours[directions[t]]
        live = mass[t + 1, :m] & need[t + 1, :m]
        position = np.cumsum(live) - 1
        sizes[t] = position[-1] + 1
        for i in prange(m):
            if live[i]:
                column = total + position[i]
                steps[0, column] = where[i]
                steps[1, column] = where[nb[0, i]]
                steps[2, column] = where[nb[1, i]]
        where = np.full(m + 1, sizes[t], np.int32)
        for i in prange(m):
            if live[i]:
                where[i] = position[i]
        total += sizes[t]
    return steps[:, :total], sizes


def blur_plan(neighbours: np.ndarray, splatted: np.ndarray, reverse: bool) -> list[np.ndarray]:
    """What each blur step computes, on compact buffers that hold only its live rows.

    A step computes only the rows that hold mass by then and are still read afterwards; other rows are zero or
    never read. It writes one row per such lattice row (in lattice order) from three rows of the previous
    step's buffer: the row itself and its two neighbours along the step's direction; a row that the previous
    step did not compute is zero there and reads that buffer's last row, kept zero. The first step reads the
    splat buffer (the V splatted vertices in lattice order); the last step computes exactly those V rows again,
    in the same order, for the slice.

    Returns:
        One 3×R_t int32 array ``(self, plus, minus)`` per step, directions 0…d (or d…0 with ``reverse``).
    """
    n_steps = neighbours.shape[0]
    directions = np.arange(n_steps)[::-1].copy() if reverse else np.arange(n_steps)
    steps, sizes = _compact_plan(neighbours, directions, splatted)
    return np.split(steps, np.cumsum(sizes)[:-1], axis=1)


@numba.njit(parallel=True, **_JIT)
def splat(values, weights, order, offsets) -> np.ndarray:
    """(V+1)×K splat buffer (last row zero): each splatted vertex gathers its points' weighted values.

    ``values`` P×K, ``weights`` P×(d+1), ``order``/``offsets`` as :func:`build_lattice` returns them.
    """
    d1 = weights.shape[1]
    n_vertices, k = offsets.size - 1, values.shape[1]
    out = np.zeros((n_vertices + 1, k), values.dtype)
    for u in prange(n_vertices):
        for q in range(offsets[u], offsets[u + 1]):
            pair = order[q]
            point, w = pair // d1, weights[pair // d1, pair % d1]
            for c in range(k):
                out[u, c] += w * values[point, c]
    return out


@numba.njit(parallel=True, **_JIT)
def blur_step(src: np.ndarray, dst: np.ndarray, step: np.ndarray) -> None:
    """``dst[i] = ½ src[self_i] + ¼ (src[plus_i] + src[minus_i])`` for the R rows of ``step``; row R zeroed."""
    k, n = src.shape[1], step.shape[1]
    for i in prange(n):
        r, a, b = step[0, i], step[1, i], step[2, i]
        for c in range(k):
            dst[i, c] = 0.5 * src[r, c] + 0.25 * (src[a, c] + src[b, c])
    for c in range(k):
        dst[n, c] = 0.0


@numba.njit(parallel=True, **_JIT)
def slice_(lattice: np.ndarray, weights: np.ndarray, vertex_rank: np.ndarray, gain: float) -> np.ndarray:
    """P×K values read back from the V rows of ``lattice`` with the splat weights, times ``gain``."""
    p, d1 = vertex_rank.shape
    k = lattice.shape[1]
    out = np.zeros((p, k), lattice.dtype)
    for i in prange(p):
        for v in range(d1):
            row = vertex_rank[i, v]
            w = weights[i, v]
            for c in range(k):
                out[i, c] += w * lattice[row, c]
        for c in range(k):
            out[i, c] *= gain
    return out


def filter_values(values: np.ndarray, weights: np.ndarray, lattice: dict, plan: list, gain: float) -> np.ndarray:
    """Splat, blur along ``plan``, slice: the lattice filter of P×K ``values``."""
    src = splat(values, weights, lattice["order"], lattice["offsets"])
    rows = max(step.shape[1] for step in plan) + 1
    buffers = np.empty((rows, values.shape[1]), values.dtype), np.empty((rows, values.shape[1]), values.dtype)
    for t, step in enumerate(plan):
        dst = buffers[t % 2][: step.shape[1] + 1]
        blur_step(src, dst, step)
        src = dst
    return slice_(src, weights, lattice["vertex_rank"], gain)
