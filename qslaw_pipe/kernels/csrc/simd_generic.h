// 16-lane float / uint32 vectors as plain arrays: the portable path (whatever the compiler makes of the loops
// at the baseline ISA). The reference the vector paths are checked against runs in Python, not here.
#pragma once
#include <cstdint>

namespace qslaw_simd {

constexpr const char* kName = "generic";
constexpr int kGemvPanels = 1;
constexpr int kGemmRows = 4, kGemmPanels = 1;

struct F {
  float v[16];
};
struct U {
  uint32_t v[16];
};

#define QSLAW_LANES(expr)          \
  F r;                             \
  for (int i = 0; i < 16; ++i) r.v[i] = (expr); \
  return r

inline F fzero() { QSLAW_LANES(0.f); }
inline F fload(const float* p) { QSLAW_LANES(p[i]); }
inline void fstore(float* p, F x) {
  for (int i = 0; i < 16; ++i) p[i] = x.v[i];
}
inline void fstore_n(float* p, F x, int n) {
  for (int i = 0; i < n; ++i) p[i] = x.v[i];
}
inline F fset1(float s) { QSLAW_LANES(s); }
inline F ffma(F a, F b, F c) { QSLAW_LANES(a.v[i] * b.v[i] + c.v[i]); }
inline F ffnma(F a, F b, F c) { QSLAW_LANES(c.v[i] - a.v[i] * b.v[i]); }
inline F fsub(F a, F b) { QSLAW_LANES(a.v[i] - b.v[i]); }
inline F fmul(F a, F b) { QSLAW_LANES(a.v[i] * b.v[i]); }
#undef QSLAW_LANES
inline U uload(const uint32_t* p) {
  U r;
  for (int i = 0; i < 16; ++i) r.v[i] = p[i];
  return r;
}
template <int S>
inline U ushr(U x) {
  U r;
  for (int i = 0; i < 16; ++i) r.v[i] = x.v[i] >> S;
  return r;
}
inline F low4(U x) {
  F r;
  for (int i = 0; i < 16; ++i) r.v[i] = static_cast<float>(x.v[i] & 0xF);
  return r;
}
inline F low8(U x) {
  F r;
  for (int i = 0; i < 16; ++i) r.v[i] = static_cast<float>(x.v[i] & 0xFF);
  return r;
}

}  // namespace qslaw_simd
