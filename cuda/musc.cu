// MuSc: LNAMD and the fused distance tile + per-image minimum of mutual scoring.
//
// musc_pair_minima: one block = one 64 x 64 tile of the dot products between the patches of a
// query image i (rows) and a reference image j (columns), for many image pairs in one launch
// (grid.x walks a job table). The epilogue turns the tile into expanded keys
// e = ||a||^2 + ||b||^2 - 2 a.b, takes the tile's row and column minima in shared memory
// (atomicMin on orderable keys), and re-measures exactly, as sum (a - b)^2 from the inputs,
// every entry within the rounding bound `tol` of its row's (or column's) best key. The exact
// squared distances go to global memory with atomicMin on their bit patterns (non-negative
// doubles order like unsigned integers), so each (query patch, reference image) keeps its
// minimum over all tiles. A symmetric job (both images queries of this chunk) also writes the
// column minima: one product serves (i, j) and (j, i).
//
// musc_top_k_mean: one thread per (query image, patch) averages the k smallest of its N-1
// per-image minima by repeated minimum selection with tie counting (no sort, k * (N-1) steps).

template <typename T> struct MuscAcc { typedef float type; };
template <> struct MuscAcc<double> { typedef double type; };

typedef unsigned long long u64;

__device__ __forceinline__ u64 musc_distance_key(double d2) {
    // d2 >= 0: the IEEE bit pattern orders like the value.
    return (u64)__double_as_longlong(d2);
}

__device__ __forceinline__ double musc_key_distance(u64 key) {
    return __longlong_as_double((long long)key);
}

template <typename T>
__global__ void musc_lnamd(
    const T* __restrict__ x, const double* __restrict__ mean, const double* __restrict__ inv_std,
    i64 h, i64 w, i64 c, i64 r, i64 patch0, T* __restrict__ out)
{
    __shared__ double partial[256];
    const i64 patch = patch0 + (i64)blockIdx.x;  // (image, y, x); launches of 2**31 - 1 patches at most
    const i64 image = patch / (h * w);
    const i64 y = (patch / w) % h;
    const i64 xpos = patch % w;
    const i64 half = (r - 1) / 2;
    const double mu = mean[image], scale = inv_std[image];
    const double box = 1.0 / (double)(r * r);
    const T* img = x + image * h * w * c;
    const i64 y0 = max((i64)0, y - half), y1 = min(h - 1, y + half);
    const i64 x0 = max((i64)0, xpos - half), x1 = min(w - 1, xpos + half);

    double sq = 0.0;
    for (i64 ch = threadIdx.x; ch < c; ch += blockDim.x) {
        double s = 0.0;
        for (i64 yy = y0; yy <= y1; ++yy)
            for (i64 xx = x0; xx <= x1; ++xx)
                s += ((double)img[(yy * w + xx) * c + ch] - mu) * scale;
        s *= box;  // zero padding: the window always divides by r * r
        sq += s * s;
    }
    partial[threadIdx.x] = sq;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    const double inv_norm = 1.0 / fmax(sqrt(partial[0]), 1e-12);
    // Second pass recomputes the box sums so each output is rounded once.
    for (i64 ch = threadIdx.x; ch < c; ch += blockDim.x) {
        double s = 0.0;
        for (i64 yy = y0; yy <= y1; ++yy)
            for (i64 xx = x0; xx <= x1; ++xx)
                s += ((double)img[(yy * w + xx) * c + ch] - mu) * scale;
        out[patch * c + ch] = (T)(s * box * inv_norm);
    }
}

template <typename T>
__device__ __forceinline__ typename MuscAcc<T>::type musc_exact_sq(const T* a, const T* b, i64 c) {
    typedef typename MuscAcc<T>::type Acc;
    Acc s0 = Acc(0), s1 = Acc(0), s2 = Acc(0), s3 = Acc(0);
    i64 k = 0;
    for (; k + 4 <= c; k += 4) {
        Acc d0 = Acc(a[k]) - Acc(b[k]), d1 = Acc(a[k + 1]) - Acc(b[k + 1]);
        Acc d2 = Acc(a[k + 2]) - Acc(b[k + 2]), d3 = Acc(a[k + 3]) - Acc(b[k + 3]);
        s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3;
    }
    for (; k < c; ++k) {
        Acc d = Acc(a[k]) - Acc(b[k]);
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

// jobs: [J, 3] int64 rows (query image i, reference image j, symmetric 0/1).
// keys: [chunk, refs, p] uint64, initialised to all ones by the caller.
template <typename T>
__global__ void musc_pair_minima(
    const T* __restrict__ q, const T* __restrict__ qn, const T* __restrict__ b, const T* __restrict__ bn,
    const i64* __restrict__ jobs, i64 p, i64 pb, i64 c, i64 q0, i64 refs, int mutual, double tol,
    u64* __restrict__ keys)
{
    typedef typename MuscAcc<T>::type Acc;
    __shared__ Acc a_tile[FCA_KSTEP][FCA_TILE + 1];
    __shared__ Acc b_tile[FCA_KSTEP][FCA_TILE + 1];
    __shared__ unsigned int row_best[FCA_TILE];
    __shared__ unsigned int col_best[FCA_TILE];

    const i64 job = blockIdx.x;
    const i64 i = jobs[3 * job], j = jobs[3 * job + 1];
    const bool symmetric = jobs[3 * job + 2] != 0;
    const i64 row0 = (i64)blockIdx.y * FCA_TILE;
    const i64 col0 = (i64)blockIdx.z * FCA_TILE;
    const int tx = threadIdx.x, ty = threadIdx.y;  // 16 x 16 threads, 4 x 4 outputs each
    const int tid = ty * 16 + tx;
    const T* a = q + i * p * c;
    const T* bb = b + j * pb * c;
    const T* na = qn + i * p;
    const T* nbb = bn + j * pb;

    if (tid < FCA_TILE) {
        row_best[tid] = 0xFFFFFFFFu;
        col_best[tid] = 0xFFFFFFFFu;
    }
    __syncthreads();

    Acc acc[4][4];
    #pragma unroll
    for (int u = 0; u < 4; ++u)
        #pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = Acc(0);

    for (i64 k0 = 0; k0 < c; k0 += FCA_KSTEP) {
        // 16 x 64 elements per operand, 256 threads: 4 loads each, 16 consecutive k per row.
        #pragma unroll
        for (int l = 0; l < 4; ++l) {
            int e = tid + l * 256;
            int kk = e % FCA_KSTEP, rr = e / FCA_KSTEP;
            i64 k = k0 + kk;
            i64 row = row0 + rr, col = col0 + rr;
            a_tile[kk][rr] = (k < c && row < p) ? Acc(a[row * c + k]) : Acc(0);
            b_tile[kk][rr] = (k < c && col < pb) ? Acc(bb[col * c + k]) : Acc(0);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < FCA_KSTEP; ++kk) {
            Acc av[4], bv[4];
            #pragma unroll
            for (int u = 0; u < 4; ++u) av[u] = a_tile[kk][ty * 4 + u];
            #pragma unroll
            for (int v = 0; v < 4; ++v) bv[v] = b_tile[kk][tx * 4 + v];
            #pragma unroll
            for (int u = 0; u < 4; ++u)
                #pragma unroll
                for (int v = 0; v < 4; ++v) acc[u][v] += av[u] * bv[v];
        }
        __syncthreads();
    }

    // Expanded keys and the tile's row / column minima.
    #pragma unroll
    for (int u = 0; u < 4; ++u) {
        i64 row = row0 + ty * 4 + u;
        #pragma unroll
        for (int v = 0; v < 4; ++v) {
            i64 col = col0 + tx * 4 + v;
            if (row < p && col < pb) {
                Acc e = Acc(na[row]) + Acc(nbb[col]) - Acc(2) * acc[u][v];
                acc[u][v] = e;
                unsigned int key = fca_float_key((float)e);
                atomicMin(&row_best[ty * 4 + u], key);
                if (symmetric) atomicMin(&col_best[tx * 4 + v], key);
            }
        }
    }
    __syncthreads();

    // Candidates within the rounding bound of their row's / column's best: exact distances.
    const i64 row_slot_base = ((i - q0) * refs + (mutual && j > i ? j - 1 : j)) * p;
    const i64 col_slot_base = symmetric ? ((j - q0) * refs + (i > j ? i - 1 : i)) * p : 0;
    #pragma unroll
    for (int u = 0; u < 4; ++u) {
        i64 row = row0 + ty * 4 + u;
        if (row >= p) continue;
        double rb = (double)fca_key_float(row_best[ty * 4 + u]);
        // The best key was rounded to float: widen the bound by that rounding.
        double row_limit = rb + tol + 1.2e-7 * fabs(rb);
        #pragma unroll
        for (int v = 0; v < 4; ++v) {
            i64 col = col0 + tx * 4 + v;
            if (col >= pb) continue;
            double e = (double)acc[u][v];
            bool for_row = e <= row_limit;
            bool for_col = false;
            if (symmetric) {
                double cb = (double)fca_key_float(col_best[tx * 4 + v]);
                for_col = e <= cb + tol + 1.2e-7 * fabs(cb);
            }
            if (!(for_row || for_col)) continue;
            double d2 = (double)musc_exact_sq(a + row * c, bb + col * c, c);
            u64 key = musc_distance_key(d2);
            if (for_row) atomicMin(&keys[row_slot_base + row], key);
            if (for_col) atomicMin(&keys[col_slot_base + col], key);
        }
    }
}

template <typename T>
__global__ void musc_top_k_mean(const u64* __restrict__ keys, i64 queries, i64 refs, i64 p, i64 k, T* __restrict__ out)
{
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= queries * p) return;
    const i64 qi = idx / p, patch = idx % p;
    const u64* v = keys + qi * refs * p + patch;
    double sum = 0.0;
    i64 remaining = k;
    u64 previous = 0;
    bool first = true;
    while (remaining > 0) {
        // Smallest key above the previous one, and how many references share it.
        u64 current = 0xFFFFFFFFFFFFFFFFull;
        i64 count = 0;
        for (i64 r = 0; r < refs; ++r) {
            u64 key = v[r * p];
            if (!first && key <= previous) continue;
            if (key < current) { current = key; count = 1; }
            else if (key == current) { ++count; }
        }
        if (count == 0) break;
        i64 take = count < remaining ? count : remaining;
        sum += (double)take * sqrt(musc_key_distance(current));
        remaining -= take;
        previous = current;
        first = false;
    }
    out[idx] = (T)(sum / (double)k);
}

// Aligned mode: each patch of a query image against the patches within `window` grid cells of
// its own position in every other image. One thread per (query of the chunk, other image,
// patch): the minimum exact squared distance in double, stored as the same orderable key
// musc_pair_minima writes, so musc_top_k_mean finishes the scores.
// keys: [chunk, n - 1, h * w]; other images in ascending order with the query itself skipped.
template <typename T>
__global__ void musc_aligned_minima(const T* __restrict__ x, i64 n, i64 h, i64 w, i64 c, i64 q0, i64 chunk,
                                    i64 window, u64* __restrict__ keys) {
    const i64 p = h * w, refs = n - 1;
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= chunk * refs * p) return;
    const i64 patch = idx % p, slot = (idx / p) % refs, il = idx / (p * refs);
    const i64 i = q0 + il, j = slot < i ? slot : slot + 1;
    const i64 y = patch / w, xx = patch % w;
    const i64 y0 = max((i64)0, y - window), y1 = min(h - 1, y + window);
    const i64 x0 = max((i64)0, xx - window), x1 = min(w - 1, xx + window);
    const T* a = x + (i * p + patch) * c;
    double best = musc_key_distance(0x7FF0000000000000ull);  // +inf
    for (i64 yy = y0; yy <= y1; ++yy) {
        for (i64 xb = x0; xb <= x1; ++xb) {
            const T* b = x + (j * p + yy * w + xb) * c;
            double s = 0.0;
            for (i64 k = 0; k < c; ++k) {
                double d = (double)a[k] - (double)b[k];
                s += d * d;
            }
            best = s < best ? s : best;
        }
    }
    keys[idx] = musc_distance_key(best);
}
