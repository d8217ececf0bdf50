// 16-lane float / uint32 vectors on AVX-512F: one zmm each. Codes of 4 bits become floats by a 16-entry
// permute (vpermps reads the low 4 bits of each index lane), so no mask and no conversion.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace qslaw_simd {

constexpr const char* kName = "avx512";
constexpr int kGemvPanels = 4;  // panels of 16 columns in one decode block (4 accumulators per row of A)
constexpr int kGemmRows = 8, kGemmPanels = 2;  // prefill tile: 8 rows x 32 columns, 16 accumulators

using F = __m512;
using U = __m512i;

inline F fzero() { return _mm512_setzero_ps(); }
inline F fload(const float* p) { return _mm512_loadu_ps(p); }
inline void fstore(float* p, F v) { _mm512_storeu_ps(p, v); }
inline void fstore_n(float* p, F v, int n) { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v); }
inline F fset1(float x) { return _mm512_set1_ps(x); }
inline F ffma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
inline F ffnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
inline F fsub(F a, F b) { return _mm512_sub_ps(a, b); }
inline F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
inline U uload(const uint32_t* p) { return _mm512_loadu_si512(p); }
template <int S>
inline U ushr(U v) { return _mm512_srli_epi32(v, S); }
inline F low4(U v) {
  const F iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_permutexvar_ps(v, iota);
}
inline F low8(U v) { return _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(0xFF))); }

}  // namespace qslaw_simd
