// Gaussian AD: whitened Mahalanobis distances, ||(x_i - mean_p) @ W_p||, for one or many
// Gaussians (PaDiM positions). A 64 x 64 tile of the product (x - mean) @ W per block; only the
// rows of W that can be non-zero for the tile's columns are read (triangular factors halve the
// work); the epilogue squares and sums the tile's outputs per row straight into float64.

// shape: 0 = lower triangular, 1 = upper triangular, 2 = full.
// row_tile0 / pos0: the first row tile and position of this launch (CUDA caps gridDim.y and
// gridDim.z at 65,535, so larger batches are split over several launches).
template <typename T, typename Acc>
__global__ void whitened_sq_norms(
    const T* __restrict__ x, i64 m, i64 d, i64 x_row_stride, i64 x_pos_stride,
    const T* __restrict__ mean, const T* __restrict__ w, i64 k, int shape,
    i64 row_tile0, i64 pos0, double* __restrict__ out_sq /* [positions, m] */)
{
    __shared__ Acc a_tile[FCA_KSTEP][FCA_TILE + 1];
    __shared__ Acc b_tile[FCA_KSTEP][FCA_TILE + 1];
    const i64 pos = pos0 + blockIdx.z;
    const i64 row0 = (row_tile0 + (i64)blockIdx.y) * FCA_TILE;
    const i64 col0 = (i64)blockIdx.x * FCA_TILE;
    const int tx = threadIdx.x, ty = threadIdx.y;  // 16 x 16 threads, 4 x 4 outputs each
    const int tid = ty * 16 + tx;
    const T* xp = x + pos * x_pos_stride;
    const T* mp = mean + pos * d;
    const T* wp = w + pos * d * k;

    i64 r_begin = 0, r_end = d;
    i64 col_last = min(col0 + FCA_TILE, k);
    if (shape == 0) r_begin = col0;
    else if (shape == 1) r_end = min(col_last, d);

    Acc acc[4][4];
    #pragma unroll
    for (int i = 0; i < 4; ++i)
        #pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);

    for (i64 r = r_begin; r < r_end; r += FCA_KSTEP) {
        // 16 x 64 = 1024 elements per tile, 256 threads: 4 loads each.
        #pragma unroll
        for (int l = 0; l < 4; ++l) {
            int e = tid + l * 256;
            int kk = e / FCA_TILE, ii = e % FCA_TILE;
            i64 rr = r + kk, row = row0 + ii;
            a_tile[kk][ii] = (rr < r_end && row < m) ? Acc(xp[row * x_row_stride + rr]) - Acc(mp[rr]) : Acc(0);
            int kb = e / FCA_TILE, jj = e % FCA_TILE;
            i64 rb = r + kb, col = col0 + jj;
            b_tile[kb][jj] = (rb < r_end && col < k) ? Acc(wp[rb * k + col]) : Acc(0);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < FCA_KSTEP; ++kk) {
            Acc a[4], b[4];
            #pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = a_tile[kk][ty * 4 + i];
            #pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = b_tile[kk][tx * 4 + j];
            #pragma unroll
            for (int i = 0; i < 4; ++i)
                #pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
        i64 row = row0 + ty * 4 + i;
        if (row >= m) continue;
        double s = 0.0;
        #pragma unroll
        for (int j = 0; j < 4; ++j) {
            i64 col = col0 + tx * 4 + j;
            if (col < k) s += (double)acc[i][j] * (double)acc[i][j];
        }
        atomicAdd(&out_sq[pos * m + row], s);
    }
}
