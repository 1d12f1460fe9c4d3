"""Launch plans: every number a CUDA launch needs, from one function per kernel.

The CuPy runtime and the emulated runtime of the test suite both call these (through the family
modules), so what runs on the CPU in CI is the geometry a GPU gets. Where the Rust kernels
compute the same quantity (MuSc's k, chunk of query images, rounding tolerance) it comes from
``_core``, not from a second definition here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# CUDA's limits (compute capability >= 3.0).
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65_535
MAX_BLOCK_THREADS = 1024
MAX_STATIC_SHARED = 48 * 1024

TILE = 64        # FCA_TILE in cuda/common.cuh: the output tile of the tiled products
TILE_THREADS = (16, 16, 1)
TOKEN_STATS_THREADS = 256
TOKEN_STATS_MAX_BLOCKS = 1 << 20   # grid-stride over rows past this
LNAMD_THREADS = 256                # musc_lnamd reduces with a power-of-two tree of this size
TOP_K_THREADS = 128
TSETLIN_THREADS = 128
MUSC_MAX_JOBS_PER_LAUNCH = 1 << 20  # bounds the device job table of one launch


@dataclass(frozen=True)
class Launch:
    """One kernel launch: grid, block, dynamic shared memory, and the offsets of this piece."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int = 0
    offsets: dict = field(default_factory=dict)

    @property
    def threads(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]

    @property
    def empty(self) -> bool:
        return any(g == 0 for g in self.grid)


def _dims(values) -> tuple[int, int, int]:
    values = tuple(int(v) for v in values)
    return (values + (1, 1, 1))[:3]


def launch(grid, block, shared_bytes=0, **offsets) -> Launch:
    return Launch(_dims(grid), _dims(block), int(shared_bytes), dict(offsets))


def check_launch(plan: Launch) -> None:
    """ValueError unless ``plan`` fits CUDA's grid, block and shared-memory limits."""
    gx, gy, gz = plan.grid
    if gx > MAX_GRID_X or gy > MAX_GRID_YZ or gz > MAX_GRID_YZ or min(plan.grid) < 0:
        raise ValueError(f"launch grid {plan.grid} exceeds CUDA's limits ({MAX_GRID_X}, {MAX_GRID_YZ}, {MAX_GRID_YZ})")
    if not 1 <= plan.threads <= MAX_BLOCK_THREADS or plan.block[2] > 64:
        raise ValueError(f"launch block {plan.block} exceeds CUDA's limits")
    if plan.shared_bytes > MAX_STATIC_SHARED:
        raise ValueError(f"launch needs {plan.shared_bytes} bytes of shared memory (limit {MAX_STATIC_SHARED})")


def _ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def _spans(total: int, step: int):
    for start in range(0, total, step):
        yield start, min(total, start + step)


# -- gaussian ----------------------------------------------------------------------------------

def whitened_sq_norms(m: int, k: int, positions: int, *, max_grid_yz: int | None = None) -> list[Launch]:
    """Tiles of 64 x 64 outputs: x = column tiles of the factor, y = row tiles, z = positions.

    Rows and positions past CUDA's 65,535 limit on y and z are split into several launches;
    each carries the first row tile (``row_tile0``) and position (``pos0``) it covers.
    """
    max_grid_yz = MAX_GRID_YZ if max_grid_yz is None else max_grid_yz
    row_tiles, col_tiles = _ceil_div(m, TILE), _ceil_div(k, TILE)
    if col_tiles > MAX_GRID_X:
        raise ValueError(f"precision_cholesky: {k} columns exceed one launch")
    out = []
    for pos0, pos1 in _spans(positions, max_grid_yz):
        for r0, r1 in _spans(row_tiles, max_grid_yz):
            out.append(launch((col_tiles, r1 - r0, pos1 - pos0), TILE_THREADS, row_tile0=r0, pos0=pos0))
    return out


# -- mia ---------------------------------------------------------------------------------------

def token_stats(rows: int, *, max_blocks: int | None = None) -> list[Launch]:
    """One block per row (the kernel strides over rows past ``max_blocks``, 2**20), 256 threads."""
    max_blocks = TOKEN_STATS_MAX_BLOCKS if max_blocks is None else max_blocks
    return [launch((min(rows, max_blocks),), (TOKEN_STATS_THREADS,))]


# -- musc --------------------------------------------------------------------------------------

def musc_lnamd(patches: int, *, max_grid_x: int = MAX_GRID_X) -> list[Launch]:
    """One block per patch (image, y, x), 256 threads over the channels (``patch0`` past
    ``max_grid_x`` patches)."""
    return [launch((p1 - p0,), (LNAMD_THREADS,), patch0=p0) for p0, p1 in _spans(patches, max_grid_x)]


@dataclass(frozen=True)
class MuscPairPlan:
    """Host-side numbers of one mutual-scoring call (shared with the Rust kernel's definitions)."""

    k: int            # smallest per-image minima averaged
    chunk: int        # query images whose minima are kept at once
    tol: float        # rounding bound of the expanded distance key


def musc_pairs(queries: int, references: int, p: int, c: int, top_ratio: float, max_memory, itemsize: int,
               max_q: float, max_b: float) -> MuscPairPlan:
    """k, the chunk of query images and the key tolerance; the minima are uint64 keys on the GPU."""
    from .. import _core  # noqa: PLC0415

    return MuscPairPlan(
        k=int(_core.musc_top_k(references, top_ratio)),
        chunk=int(_core.musc_chunk_of_queries(queries, references, p, max_memory, 8)),
        tol=float(_core.musc_key_tolerance(c, max_q, max_b, itemsize)),
    )


def musc_pair_minima(jobs: int, p: int, pb: int, *, max_jobs: int | None = None) -> list[Launch]:
    """x = image-pair jobs (``job0`` is the first row of the job table), y / z = patch tiles."""
    max_jobs = MUSC_MAX_JOBS_PER_LAUNCH if max_jobs is None else max_jobs
    rows, cols = _ceil_div(p, TILE), _ceil_div(pb, TILE)
    if rows > MAX_GRID_YZ or cols > MAX_GRID_YZ:
        raise ValueError(f"patches: {max(p, pb)} patches per image exceed CUDA's grid ({MAX_GRID_YZ * TILE})")
    return [launch((j1 - j0, rows, cols), TILE_THREADS, job0=j0) for j0, j1 in _spans(jobs, max_jobs)]


MUSC_ALIGNED_KEY_BYTES = 1 << 30  # device memory for the aligned minima of one chunk of queries


def musc_aligned(queries: int, p: int, top_ratio: float) -> MuscPairPlan:
    """k and the chunk of query images for aligned scoring (exact distances: no tolerance)."""
    from .. import _core  # noqa: PLC0415

    return MuscPairPlan(k=int(_core.musc_top_k(queries - 1, top_ratio)),
                        chunk=int(_core.musc_chunk_of_queries(queries, queries - 1, p, MUSC_ALIGNED_KEY_BYTES, 8)),
                        tol=0.0)


def musc_aligned_minima(count: int) -> list[Launch]:
    """One thread per (query, other image, patch)."""
    blocks = _ceil_div(count, TOP_K_THREADS)
    if blocks > MAX_GRID_X:
        raise ValueError(f"patches: {count} (image, image, patch) triples exceed one launch")
    return [launch((blocks,), (TOP_K_THREADS,))]


def musc_top_k_mean(count: int) -> list[Launch]:
    """One thread per (query image, patch)."""
    return [launch((_ceil_div(count, TOP_K_THREADS),), (TOP_K_THREADS,))]


# -- tsetlin -----------------------------------------------------------------------------------

def tsetlin_class_sums(n: int, total_clauses: int, *, max_grid_yz: int | None = None) -> list[Launch]:
    """x = documents, y = tiles of 128 clauses (``clause_tile0`` past 65,535 tiles)."""
    max_grid_yz = MAX_GRID_YZ if max_grid_yz is None else max_grid_yz
    tiles = _ceil_div(total_clauses, TSETLIN_THREADS)
    return [launch((d1 - d0, t1 - t0), (TSETLIN_THREADS,), doc0=d0, clause_tile0=t0)
            for d0, d1 in _spans(n, MAX_GRID_X) for t0, t1 in _spans(tiles, max_grid_yz)]


TSETLIN_POOL_WORDS = 1 << 15   # TSETLIN_POOL_WORDS in cuda/tsetlin.cu (Rust MASK_POOL_WORDS)
TSETLIN_POOL_CHUNKS = TSETLIN_POOL_WORDS // 256  # one generator per chunk of 256 masks


def tsetlin_mask_pool() -> list[Launch]:
    """One thread per chunk of the mask table."""
    return [launch((_ceil_div(TSETLIN_POOL_CHUNKS, TSETLIN_THREADS),), (TSETLIN_THREADS,))]


def tsetlin_train_evaluate(total_clauses: int) -> list[Launch]:
    """One thread per clause of every bank."""
    blocks = _ceil_div(total_clauses, TSETLIN_THREADS)
    if blocks > MAX_GRID_X:
        raise ValueError(f"n_clauses: {total_clauses} clauses exceed one launch")
    return [launch((blocks,), (TSETLIN_THREADS,))]


def tsetlin_train_pick() -> list[Launch]:
    """One thread: the negative class of one example."""
    return [launch((1,), (1,))]


def tsetlin_train_feedback(clauses: int, coalesced: bool) -> list[Launch]:
    """One thread per updated clause: the shared pool, or the target's and the negative's banks."""
    threads = clauses if coalesced else 2 * clauses
    blocks = _ceil_div(threads, TSETLIN_THREADS)
    if blocks > MAX_GRID_X:
        raise ValueError(f"n_clauses: {clauses} clauses exceed one launch")
    return [launch((blocks,), (TSETLIN_THREADS,))]


# -- patchcore ---------------------------------------------------------------------------------

KNN_THREADS = 64          # FCA_KNN_THREADS in cuda/patchcore.cu (the shared lists are sized by it)
KNN_MAX_K = 32            # FCA_KNN_MAX_K: the per-thread list length
CORESET_THREADS = 256     # FCA_CORESET_THREADS: a power of two for the tree reductions


def knn_exact(m: int, k: int) -> list[Launch]:
    """One block of 64 threads per query (``query0`` past 2**31 - 1 queries)."""
    if not 1 <= k <= KNN_MAX_K:
        raise ValueError(f"k: the CUDA kNN kernel keeps at most {KNN_MAX_K} neighbours, got {k}")
    return [launch((q1 - q0,), (KNN_THREADS,), query0=q0) for q0, q1 in _spans(m, MAX_GRID_X)]


def row_norms(n: int) -> list[Launch]:
    """Threads over the rows, grid-stride past the grid limit."""
    return [launch((min(_ceil_div(n, CORESET_THREADS), MAX_GRID_X),), (CORESET_THREADS,))]


def coreset_update(n: int) -> list[Launch]:
    """One thread per point; each block reports its farthest point."""
    blocks = _ceil_div(n, CORESET_THREADS)
    if blocks > MAX_GRID_X:
        raise ValueError(f"X: {n} points exceed one launch")
    return [launch((blocks,), (CORESET_THREADS,))]


def coreset_pick() -> list[Launch]:
    """One block reduces the blocks' farthest points to the next centre."""
    return [launch((1,), (CORESET_THREADS,))]
