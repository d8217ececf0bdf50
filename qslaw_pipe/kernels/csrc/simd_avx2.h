// 16-lane float / uint32 vectors on AVX2 + FMA: two ymm each (16 registers: smaller tiles than AVX-512).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace qslaw_simd {

constexpr const char* kName = "avx2";
constexpr int kGemvPanels = 2;
constexpr int kGemmRows = 4, kGemmPanels = 1;

struct F {
  __m256 a, b;
};
struct U {
  __m256i a, b;
};

inline F fzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline F fload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void fstore(float* p, F v) {
  _mm256_storeu_ps(p, v.a);
  _mm256_storeu_ps(p + 8, v.b);
}
inline void fstore_n(float* p, F v, int n) {
  alignas(32) float t[16];
  fstore(t, v);
  for (int i = 0; i < n; ++i) p[i] = t[i];
}
inline F fset1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
inline F ffma(F x, F y, F z) { return {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)}; }
inline F ffnma(F x, F y, F z) { return {_mm256_fnmadd_ps(x.a, y.a, z.a), _mm256_fnmadd_ps(x.b, y.b, z.b)}; }
inline F fsub(F x, F y) { return {_mm256_sub_ps(x.a, y.a), _mm256_sub_ps(x.b, y.b)}; }
inline F fmul(F x, F y) { return {_mm256_mul_ps(x.a, y.a), _mm256_mul_ps(x.b, y.b)}; }
inline U uload(const uint32_t* p) {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8))};
}
template <int S>
inline U ushr(U v) { return {_mm256_srli_epi32(v.a, S), _mm256_srli_epi32(v.b, S)}; }
inline F low_bits(U v, int mask) {
  const __m256i m = _mm256_set1_epi32(mask);
  return {_mm256_cvtepi32_ps(_mm256_and_si256(v.a, m)), _mm256_cvtepi32_ps(_mm256_and_si256(v.b, m))};
}
inline F low4(U v) { return low_bits(v, 0xF); }
inline F low8(U v) { return low_bits(v, 0xFF); }

}  // namespace qslaw_simd
