// Membership detection: one-pass token statistics (logp, mu, sigma) per logits row.
//
// One block per row. Each thread reads 16-byte vectors of the row (after a scalar head that
// reaches 16-byte alignment), computes the exact moments of each vector about the vector's own
// maximum, and folds them into its running state with the Chan/West merge after rescaling by
// exp(m_old - m_new). Threads merge by warp shuffles, warps through shared memory. The row is
// read from global memory exactly once. Half-precision logits arrive as raw 16-bit patterns and
// are widened here (no fp16/bf16 headers needed under NVRTC).

#define FCA_NAN __longlong_as_double(0x7ff8000000000000ULL)

template <typename A> __device__ __forceinline__ A fca_inf();
template <> __device__ __forceinline__ float fca_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double fca_inf<double>() { return __longlong_as_double(0x7ff0000000000000LL); }

struct fca_bf16 { unsigned short bits; };
struct fca_f16 { unsigned short bits; };

__device__ __forceinline__ float fca_widen(float x) { return x; }
__device__ __forceinline__ double fca_widen(double x) { return x; }
__device__ __forceinline__ float fca_widen(fca_bf16 x) { return __uint_as_float(((unsigned int)x.bits) << 16); }
__device__ __forceinline__ float fca_widen(fca_f16 x) {
    // Shift exponent and mantissa into float32 position and rescale by 2^112 (normalises
    // subnormals too); an all-ones exponent maps to float32's infinities / NaN.
    unsigned int h = x.bits;
    unsigned int sign = (h & 0x8000u) << 16;
    unsigned int magnitude = (h & 0x7fffu) << 13;
    unsigned int body = ((h & 0x7c00u) == 0x7c00u) ? (0x7f800000u | magnitude)
                                                    : __float_as_uint(__uint_as_float(magnitude) * 5.192296858534828e33f);
    return __uint_as_float(sign | body);
}

template <typename T> struct fca_acc { typedef float type; };
template <> struct fca_acc<double> { typedef double type; };

__device__ __forceinline__ float fca_exp(float x) { return exp2f(x * 1.4426950408889634f); }
__device__ __forceinline__ double fca_exp(double x) { return exp(x); }
// Below this (relative to the local maximum) a weight is exactly 0 after exponentiation.
__device__ __forceinline__ float fca_low(float) { return -200.0f; }
__device__ __forceinline__ double fca_low(double) { return -1000.0; }

// weight and m2 relative to e^max; mean is the weighted mean of (logit - max). Keeping the
// mean relative to the running maximum, not of the raw logits, is what keeps mu exact in float:
// a raw mean near a logit offset of 1e4 loses ulp(1e4) ~ 1e-3 when the maximum is subtracted.
template <typename A>
struct fca_moments {
    A max, weight, mean, m2;
};

template <typename A>
__device__ __forceinline__ fca_moments<A> fca_merge(fca_moments<A> a, fca_moments<A> b) {
    if (b.weight == A(0)) return a;
    if (a.weight == A(0)) return b;
    A m = a.max > b.max ? a.max : b.max;
    A sa = fca_exp(a.max - m), sb = fca_exp(b.max - m);
    A wa = a.weight * sa, wb = b.weight * sb;
    A w = wa + wb;
    // Both means re-expressed relative to the new maximum. The shifts are exact whenever the
    // weights matter (two maxima within a factor of two subtract exactly, Sterbenz).
    A mean_a = a.mean + (a.max - m), mean_b = b.mean + (b.max - m);
    A delta = mean_b - mean_a;
    fca_moments<A> out;
    out.max = m;
    out.weight = w;
    out.mean = mean_a + delta * (wb / w);
    out.m2 = a.m2 * sa + b.m2 * sb + delta * delta * (wa * wb / w);
    return out;
}

// Exact moments of n values about their own maximum; `bad` collects NaN / +inf.
template <typename A, int N>
__device__ __forceinline__ fca_moments<A> fca_local(const A (&z)[N], bool& bad) {
    fca_moments<A> out;
    out.weight = A(0); out.mean = A(0); out.m2 = A(0);
    A m = z[0];
    #pragma unroll
    for (int i = 0; i < N; ++i) {
        bad |= !(z[i] < fca_inf<A>());
        m = z[i] > m ? z[i] : m;
    }
    out.max = m;
    if (!(m > -fca_inf<A>()) || bad) return out;
    A d[N], e[N], w = A(0), s = A(0);
    #pragma unroll
    for (int i = 0; i < N; ++i) {
        A di = z[i] - m;
        d[i] = di > fca_low(A(0)) ? di : fca_low(A(0));
        e[i] = fca_exp(d[i]);
        w += e[i];
        s += e[i] * d[i];
    }
    A dbar = s / w, m2 = A(0);
    #pragma unroll
    for (int i = 0; i < N; ++i) {
        A dev = d[i] - dbar;
        m2 += e[i] * dev * dev;
    }
    out.weight = w;
    out.mean = dbar;
    out.m2 = m2;
    return out;
}

template <typename A>
__device__ __forceinline__ fca_moments<A> fca_shuffle_down(fca_moments<A> a, int offset) {
    fca_moments<A> b;
    b.max = __shfl_down_sync(0xffffffffu, a.max, offset);
    b.weight = __shfl_down_sync(0xffffffffu, a.weight, offset);
    b.mean = __shfl_down_sync(0xffffffffu, a.mean, offset);
    b.m2 = __shfl_down_sync(0xffffffffu, a.m2, offset);
    return b;
}

// logits [batch, logits_time, vocab]; targets, mask and the float64 outputs [batch, time] with
// time <= logits_time (rows past `time` are not read); mask may be nullptr (every row scored);
// max_logp (the top-1 token's log-probability, -ln of the weight) may be nullptr (not wanted).
// blockDim.x must be a multiple of 32 and at most 1024.
template <typename T>
__global__ void token_stats(const T* __restrict__ logits, i64 batch, i64 time, i64 logits_time, i64 vocab,
                            const i64* __restrict__ targets,
                            const unsigned char* __restrict__ mask, double* __restrict__ logp,
                            double* __restrict__ mu, double* __restrict__ sigma,
                            double* __restrict__ max_logp) {
    typedef typename fca_acc<T>::type A;
    constexpr int VEC = 16 / sizeof(T);
    __shared__ fca_moments<A> warp_totals[32];
    __shared__ int any_bad;

    const i64 rows = batch * time;
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        if (mask != nullptr && mask[row] == 0) {
            if (threadIdx.x == 0) {
                logp[row] = FCA_NAN; mu[row] = FCA_NAN; sigma[row] = FCA_NAN;
                if (max_logp != nullptr) max_logp[row] = FCA_NAN;
            }
            continue;
        }
        const T* p = logits + ((row / time) * logits_time + row % time) * vocab;
        i64 misalign = (i64)(((unsigned long long)p) & 15ull) / (i64)sizeof(T);
        i64 head = misalign == 0 ? 0 : (VEC - misalign);
        if (((unsigned long long)p) % sizeof(T) != 0 || head > vocab) head = vocab;  // no vector body
        i64 n_vec = (vocab - head) / VEC;
        i64 tail_start = head + n_vec * VEC;

        fca_moments<A> st;
        st.max = -fca_inf<A>(); st.weight = A(0); st.mean = A(0); st.m2 = A(0);
        bool bad = false;

        // Scalar head and tail: at most 2 * VEC values per row.
        for (i64 i = threadIdx.x; i < head + (vocab - tail_start); i += blockDim.x) {
            i64 idx = i < head ? i : tail_start + (i - head);
            A z[1] = {fca_widen(p[idx])};
            st = fca_merge(st, fca_local<A, 1>(z, bad));
        }
        const uint4* body = reinterpret_cast<const uint4*>(p + head);
        for (i64 v = threadIdx.x; v < n_vec; v += blockDim.x) {
            uint4 raw = __ldg(body + v);
            const T* vals = reinterpret_cast<const T*>(&raw);
            A z[VEC];
            #pragma unroll
            for (int i = 0; i < VEC; ++i) z[i] = fca_widen(vals[i]);
            st = fca_merge(st, fca_local<A, VEC>(z, bad));
        }

        // Warp merge, then the warps' totals in warp 0.
        #pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) st = fca_merge(st, fca_shuffle_down(st, offset));
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
        if (threadIdx.x == 0) any_bad = 0;
        __syncthreads();
        if (bad) any_bad = 1;
        if (lane == 0) warp_totals[warp] = st;
        __syncthreads();
        if (warp == 0) {
            if (lane < n_warps) {
                st = warp_totals[lane];
            } else {
                st.max = -fca_inf<A>(); st.weight = A(0); st.mean = A(0); st.m2 = A(0);
            }
            #pragma unroll
            for (int offset = 16; offset > 0; offset >>= 1) st = fca_merge(st, fca_shuffle_down(st, offset));
            if (lane == 0) {
                if (any_bad || !(st.weight > A(0))) {
                    logp[row] = FCA_NAN; mu[row] = FCA_NAN; sigma[row] = FCA_NAN;
                    if (max_logp != nullptr) max_logp[row] = FCA_NAN;
                } else {
                    // Relative to the maximum first, as the Rust kernel (huge logits keep ln(weight)).
                    double log_weight = log((double)st.weight);
                    double zt = (double)fca_widen(p[targets[row]]);
                    logp[row] = (zt - (double)st.max) - log_weight;
                    mu[row] = (double)st.mean - log_weight;
                    sigma[row] = sqrt((double)st.m2 / (double)st.weight);
                    if (max_logp != nullptr) max_logp[row] = -log_weight;
                }
            }
        }
        __syncthreads();  // warp_totals and any_bad are reused by the next row
    }
}
