// Int4 matmul / dequantize on the CPU, in the fold artifact's layout:
//   B packed uint8 [N, ceil(K / 2)]: codes of row n, two per byte, low nibble first
//   delta float [N, G], zp uint8 [N, G], G = ceil(K / group_size); W[n, k] = delta * (code - zp)
// Y [M, N] = A [M, K] @ W^T. The functions work on output rows [n0, n1), so the caller can spread rows
// over its own thread pool (onnxruntime's, in qslaw_ort_ops.cc); inner loops are written to vectorise.
#pragma once
#include <cstdint>

namespace qslaw {

// Per row m and group g of A: the sum of A over the group's inputs, asum [M, G].
void group_sums(const float* A, int64_t M, int64_t K, int64_t group_size, float* asum);

void matmul_int4_rows(const float* A, const float* asum, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y,
                      int64_t M, int64_t N, int64_t K, int64_t group_size, int64_t n0, int64_t n1);

void dequantize_int4_rows(const uint8_t* B, const float* delta, const uint8_t* zp, float* W, int64_t K,
                          int64_t group_size, int64_t n0, int64_t n1);

}  // namespace qslaw
