#include "int4_cpu.h"

#include <algorithm>
#include <vector>

namespace qslaw {
namespace {

// codes of a row for inputs [k0, k1) as floats into `out` (k0 even: groups start on a byte).
inline void unpack_span(const uint8_t* row, int64_t k0, int64_t k1, float* out) {
  const uint8_t* b = row + k0 / 2;
  const int64_t pairs = (k1 - k0) / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    out[2 * j] = static_cast<float>(b[j] & 0x0F);
    out[2 * j + 1] = static_cast<float>(b[j] >> 4);
  }
  if ((k1 - k0) & 1) out[k1 - k0 - 1] = static_cast<float>(b[pairs] & 0x0F);
}

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

inline void dequantize_row(const uint8_t* row, const float* delta, const uint8_t* zp, float* w, int64_t K, int64_t gs) {
  unpack_span(row, 0, K, w);
  for (int64_t g = 0, k0 = 0; k0 < K; ++g, k0 += gs) {
    const int64_t k1 = std::min(K, k0 + gs);
    const float d = delta[g], z = static_cast<float>(zp[g]);
    for (int64_t k = k0; k < k1; ++k) w[k] = d * (w[k] - z);
  }
}

// Small M (decode): per group, y += delta * (sum_k a_k * code_k - zp * sum_k a_k).
void gemv_rows(const float* A, const float* asum, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y,
               int64_t M, int64_t N, int64_t K, int64_t gs, int64_t n0, int64_t n1) {
  const int64_t G = (K + gs - 1) / gs, row_bytes = (K + 1) / 2;
  std::vector<float> codes(gs);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = B + n * row_bytes;
    for (int64_t m = 0; m < M; ++m) Y[m * N + n] = 0.f;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * gs, k1 = std::min(K, k0 + gs);
      unpack_span(row, k0, k1, codes.data());
      const float d = delta[n * G + g], z = static_cast<float>(zp[n * G + g]);
      for (int64_t m = 0; m < M; ++m) Y[m * N + n] += d * (dot(A + m * K + k0, codes.data(), k1 - k0) - z * asum[m * G + g]);
    }
  }
}

// Larger M (prefill): dequantize the rows once, reuse them for every row of A.
void gemm_rows(const float* A, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y, int64_t M, int64_t N,
               int64_t K, int64_t gs, int64_t n0, int64_t n1) {
  const int64_t G = (K + gs - 1) / gs, row_bytes = (K + 1) / 2;
  std::vector<float> w((n1 - n0) * K);
  for (int64_t n = n0; n < n1; ++n) dequantize_row(B + n * row_bytes, delta + n * G, zp + n * G, w.data() + (n - n0) * K, K, gs);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) Y[m * N + n] = dot(A + m * K, w.data() + (n - n0) * K, K);
}

}  // namespace

void group_sums(const float* A, int64_t M, int64_t K, int64_t gs, float* asum) {
  const int64_t G = (K + gs - 1) / gs;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * gs, k1 = std::min(K, k0 + gs);
      float s = 0.f;
      for (int64_t k = k0; k < k1; ++k) s += A[m * K + k];
      asum[m * G + g] = s;
    }
}

void matmul_int4_rows(const float* A, const float* asum, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y,
                      int64_t M, int64_t N, int64_t K, int64_t group_size, int64_t n0, int64_t n1) {
  if (M <= 4)
    gemv_rows(A, asum, B, delta, zp, Y, M, N, K, group_size, n0, n1);
  else
    gemm_rows(A, B, delta, zp, Y, M, N, K, group_size, n0, n1);
}

void dequantize_int4_rows(const uint8_t* B, const float* delta, const uint8_t* zp, float* W, int64_t K, int64_t group_size,
                          int64_t n0, int64_t n1) {
  const int64_t G = (K + group_size - 1) / group_size, row_bytes = (K + 1) / 2;
  for (int64_t n = n0; n < n1; ++n) dequantize_row(B + n * row_bytes, delta + n * G, zp + n * G, W + n * K, K, group_size);
}

}  // namespace qslaw
