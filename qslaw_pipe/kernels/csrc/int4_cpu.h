// Int4 matmul / dequantize on the CPU, in the fold artifact's layout:
//   B packed uint8 [N, ceil(K / 2)]: codes of row n, two per byte, low nibble first
//   delta float [N, G], zp uint8 [N, G], G = ceil(K / group_size); W[n, k] = delta * (code - zp)
// Y [M, N] = A [M, K] @ W^T. Threaded with OpenMP over N; inner loops written for auto-vectorisation.
#pragma once
#include <cstdint>

namespace qslaw {

void matmul_int4_cpu(const float* A, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y,
                     int64_t M, int64_t N, int64_t K, int64_t group_size);

void dequantize_int4_cpu(const uint8_t* B, const float* delta, const uint8_t* zp, float* W,
                         int64_t N, int64_t K, int64_t group_size);

}  // namespace qslaw
