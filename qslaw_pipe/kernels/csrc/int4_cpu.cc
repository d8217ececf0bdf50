#include "int4_cpu.h"

#include <algorithm>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QSLAW_AVX2 1
#endif

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

#ifdef QSLAW_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// 32 codes from 16 bytes (low nibble first) as four vectors of 8 floats, in input order.
inline void codes32(const uint8_t* b, __m256 f[4]) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  const __m128i e0 = _mm_unpacklo_epi8(lo, hi), e1 = _mm_unpackhi_epi8(lo, hi);
  f[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(e0));
  f[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(e0, 8)));
  f[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(e1));
  f[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(e1, 8)));
}

// M = 1: y[n] = sum_g delta * (sum_k a_k code_k - zp * asum_g), codes widened in registers, one hsum per row.
void gemv1_rows_avx2(const float* a, const float* asum, const uint8_t* B, const float* delta, const uint8_t* zp,
                     float* y, int64_t K, int64_t gs, int64_t n0, int64_t n1) {
  const int64_t G = (K + gs - 1) / gs, row_bytes = (K + 1) / 2;
  float tail[32];
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = B + n * row_bytes;
    __m256 total = _mm256_setzero_ps();
    float corr = 0.f, extra = 0.f;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k0 = g * gs, k1 = std::min(K, k0 + gs);
      const float d = delta[n * G + g];
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), f[4];
      int64_t k = k0;
      for (; k + 32 <= k1; k += 32) {
        codes32(row + k / 2, f);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), f[0], acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), f[1], acc1);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), f[2], acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), f[3], acc1);
      }
      if (k < k1) {
        unpack_span(row, k, k1, tail);
        float s = 0.f;
        for (int64_t j = 0; j < k1 - k; ++j) s += a[k + j] * tail[j];
        extra += d * s;
      }
      total = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_add_ps(acc0, acc1), total);
      corr += d * static_cast<float>(zp[n * G + g]) * asum[g];
    }
    y[n] = hsum(total) + extra - corr;
  }
}

// Y[m0..m0+rows, 0..16) = A rows . panel, panel [K][16] (dequantized W rows, transposed): broadcast a
// value of each of 4 rows of A, two 8-wide panel loads, 8 FMAs per k (rows < 4 repeat the last row).
inline void panel4x16(const float* a, int64_t lda, int64_t rows, const float* panel, int64_t K, float out[4][16]) {
  __m256 acc[4][2];
  for (auto& r : acc) r[0] = r[1] = _mm256_setzero_ps();
  const float* ar[4];
  for (int64_t i = 0; i < 4; ++i) ar[i] = a + std::min(i, rows - 1) * lda;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 p0 = _mm256_loadu_ps(panel + k * 16), p1 = _mm256_loadu_ps(panel + k * 16 + 8);
    for (int i = 0; i < 4; ++i) {
      const __m256 ai = _mm256_broadcast_ss(ar[i] + k);
      acc[i][0] = _mm256_fmadd_ps(ai, p0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, p1, acc[i][1]);
    }
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out[i], acc[i][0]);
    _mm256_storeu_ps(out[i] + 8, acc[i][1]);
  }
}
#endif

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
#ifdef QSLAW_AVX2
  // up to 16 output columns per panel (tasks hand out 16 rows of W); zero columns beyond n1
  const int64_t cols = n1 - n0;
  std::vector<float> panel(K * 16, 0.f);
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t k = 0; k < K; ++k) panel[k * 16 + j] = w[j * K + k];
  float out[4][16];
  for (int64_t m = 0; m < M; m += 4) {
    const int64_t rows = std::min<int64_t>(4, M - m);
    panel4x16(A + m * K, K, rows, panel.data(), K, out);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) Y[(m + i) * N + n0 + j] = out[i][j];
  }
#else
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) Y[m * N + n] = dot(A + m * K, w.data() + (n - n0) * K, K);
#endif
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
#ifdef QSLAW_AVX2
  if (M == 1) return gemv1_rows_avx2(A, asum, B, delta, zp, Y, K, group_size, n0, n1);
#endif
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
