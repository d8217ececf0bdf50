// CUDA int4 kernels in the fold artifact's layout (see int4_cpu.h). Return 0 on success, else a cudaError_t.
#pragma once
#include <cstdint>

namespace qslaw {

// M <= 8: GEMV, one warp per output column n, codes dequantized in registers.
// M > 8: dequantize W [N, K] into a temporary buffer, then a tiled SGEMM.
int matmul_int4_cuda(const float* A, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y, int64_t M,
                     int64_t N, int64_t K, int64_t group_size, void* stream);

int dequantize_int4_cuda(const uint8_t* B, const float* delta, const uint8_t* zp, float* W, int64_t N, int64_t K,
                         int64_t group_size, void* stream);

}  // namespace qslaw
