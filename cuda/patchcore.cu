// Memory-bank kernels: exact k nearest neighbours and the greedy k-center coreset.
//
// knn_exact: one block per query; each thread scans a strided share of the bank, measures every
// distance exactly in double and keeps its own sorted top-k (k <= FCA_KNN_MAX_K) in registers /
// local memory; the block's lists meet in shared memory and thread 0 merges them by repeated
// minimum over the list heads. Ties are ordered by bank index, as in the Rust kernel.
//
// coreset_update / coreset_pick: one greedy step as two launches without a host round trip.
// update: every point's minimum squared distance to the newest centre (read from the device
// selection array), and each block's farthest point; pick: the farthest of the blocks' points
// (lowest index on ties) becomes the next centre.

#define FCA_KNN_MAX_K 32
#define FCA_KNN_THREADS 64
#define FCA_CORESET_THREADS 256

// Squared distance in double with four interleaved partial sums combined as (s0 + s1) + (s2 + s3),
// the Rust kernel's order, so both backends round identically (this family is compiled with
// --fmad=false: no product is fused into its sum).
template <typename T>
__device__ __forceinline__ double fca_exact_sq(const T* a, const T* b, i64 d) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    i64 k = 0;
    for (; k + 4 <= d; k += 4) {
        #pragma unroll
        for (int l = 0; l < 4; ++l) {
            double diff = (double)a[k + l] - (double)b[k + l];
            s[l] += diff * diff;
        }
    }
    for (; k < d; ++k) {
        double diff = (double)a[k] - (double)b[k];
        s[0] += diff * diff;
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

// metric: 0 = euclidean, 1 = cosine (q_norm / b_norm are the exact float64 norms then).
template <typename T>
__global__ void knn_exact(const T* __restrict__ queries, i64 m, const T* __restrict__ bank, i64 n, i64 d,
                          i64 k, int metric, const double* __restrict__ q_norm,
                          const double* __restrict__ b_norm, i64 query0, double* __restrict__ out_dist,
                          i64* __restrict__ out_idx) {
    __shared__ double s_dist[FCA_KNN_THREADS][FCA_KNN_MAX_K];
    __shared__ i64 s_idx[FCA_KNN_THREADS][FCA_KNN_MAX_K];
    __shared__ int s_count[FCA_KNN_THREADS];
    __shared__ int s_head[FCA_KNN_THREADS];
    const i64 qi = query0 + (i64)blockIdx.x;
    const int tid = threadIdx.x;
    double best_d[FCA_KNN_MAX_K];
    i64 best_i[FCA_KNN_MAX_K];
    int count = 0;
    if (qi < m) {
        const T* q = queries + qi * d;
        for (i64 j = tid; j < n; j += blockDim.x) {
            const T* b = bank + j * d;
            double dist;
            if (metric == 0) {
                dist = sqrt(fca_exact_sq(q, b, d));
            } else {
                double s = 0.0;
                for (i64 c = 0; c < d; ++c) s += (double)q[c] * (double)b[c];
                dist = 1.0 - s / (q_norm[qi] * b_norm[j]);
            }
            // Insert (dist, j) into the sorted list if it beats the k-th; j grows, so an equal
            // distance never displaces an earlier (lower) index.
            if (count == k && !(dist < best_d[k - 1])) continue;
            int at = count < k ? count : (int)k - 1;
            while (at > 0 && dist < best_d[at - 1]) {
                best_d[at] = best_d[at - 1];
                best_i[at] = best_i[at - 1];
                --at;
            }
            best_d[at] = dist;
            best_i[at] = j;
            if (count < k) ++count;
        }
    }
    for (int s = 0; s < count; ++s) {
        s_dist[tid][s] = best_d[s];
        s_idx[tid][s] = best_i[s];
    }
    s_count[tid] = count;
    s_head[tid] = 0;
    __syncthreads();
    if (tid == 0 && qi < m) {
        for (i64 slot = 0; slot < k; ++slot) {
            int pick = -1;
            for (int t = 0; t < (int)blockDim.x; ++t) {
                if (s_head[t] >= s_count[t]) continue;
                double dv = s_dist[t][s_head[t]];
                i64 iv = s_idx[t][s_head[t]];
                if (pick < 0) { pick = t; continue; }
                double bd = s_dist[pick][s_head[pick]];
                i64 bi = s_idx[pick][s_head[pick]];
                if (dv < bd || (dv == bd && iv < bi)) pick = t;
            }
            out_dist[qi * k + slot] = s_dist[pick][s_head[pick]];
            out_idx[qi * k + slot] = s_idx[pick][s_head[pick]];
            ++s_head[pick];
        }
    }
}

// The block's largest value (lowest index on ties) into s_value[0] / s_index[0]; every thread
// of the (power-of-two) block calls it.
__device__ __forceinline__ void fca_argmax_block(double* s_value, i64* s_index, double value, i64 index) {
    s_value[threadIdx.x] = value;
    s_index[threadIdx.x] = index;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if ((int)threadIdx.x < stride) {
            double v = s_value[threadIdx.x + stride];
            i64 j = s_index[threadIdx.x + stride];
            if (v > s_value[threadIdx.x] || (v == s_value[threadIdx.x] && j < s_index[threadIdx.x])) {
                s_value[threadIdx.x] = v;
                s_index[threadIdx.x] = j;
            }
        }
        __syncthreads();
    }
}

template <typename T>
__global__ void coreset_update(const T* __restrict__ x, i64 n, i64 d, const i64* __restrict__ selected, i64 step,
                               double* __restrict__ min_d2, double* __restrict__ block_value,
                               i64* __restrict__ block_index) {
    __shared__ double s_value[FCA_CORESET_THREADS];
    __shared__ i64 s_index[FCA_CORESET_THREADS];
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 centre = selected[step];
    double value = -1.0;
    i64 index = n;
    if (i < n) {
        double s = fca_exact_sq(x + i * d, x + centre * d, d);
        double m = min_d2[i];
        if (s < m) m = s;
        min_d2[i] = m;
        value = m;
        index = i;
    }
    fca_argmax_block(s_value, s_index, value, index);
    if (threadIdx.x == 0) {
        block_value[blockIdx.x] = s_value[0];
        block_index[blockIdx.x] = s_index[0];
    }
}

// Row norms sqrt(sum x^2) in double, summed in order as Rust's exact_dot, one thread per row
// (grid-stride): the cosine distances of knn_exact divide by them.
template <typename T>
__global__ void row_norms(const T* __restrict__ x, i64 n, i64 d, double* __restrict__ out) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const T* row = x + i * d;
        double s = 0.0;
        for (i64 c = 0; c < d; ++c) s += (double)row[c] * (double)row[c];
        out[i] = sqrt(s);
    }
}

__global__ void coreset_pick(const double* __restrict__ block_value, const i64* __restrict__ block_index,
                             i64 blocks, i64* __restrict__ selected, i64 step) {
    __shared__ double s_value[FCA_CORESET_THREADS];
    __shared__ i64 s_index[FCA_CORESET_THREADS];
    double value = -1.0;
    i64 index = 0x7fffffffffffffffLL;
    for (i64 b = threadIdx.x; b < blocks; b += blockDim.x) {
        double v = block_value[b];
        i64 j = block_index[b];
        if (v > value || (v == value && j < index)) { value = v; index = j; }
    }
    fca_argmax_block(s_value, s_index, value, index);
    if (threadIdx.x == 0) selected[step + 1] = s_index[0];
}
