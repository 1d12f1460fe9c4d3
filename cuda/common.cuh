// Shared helpers for every fastcore_ad CUDA family (compiled with NVRTC through CuPy).
#pragma once

#define FCA_TILE 64
#define FCA_KSTEP 16

typedef long long i64;

// Largest float below or equal, as an orderable unsigned key (for atomicMin/atomicMax tricks).
__device__ __forceinline__ unsigned int fca_float_key(float x) {
    unsigned int b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float fca_key_float(unsigned int k) {
    unsigned int b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return __uint_as_float(b);
}
