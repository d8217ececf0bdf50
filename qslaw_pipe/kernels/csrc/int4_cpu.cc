// Packing, ISA selection and the scalar helpers of the CPU int4 ops (the vector kernels: int4_kernels.inc).
#include "int4_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace qslaw {

extern const Isa kIsaGeneric, kIsaAvx2, kIsaAvx512;

namespace {

uint32_t code(const uint8_t* row, int64_t k, int64_t bits) {
  return bits == 8 ? row[k] : (k & 1 ? row[k / 2] >> 4 : row[k / 2] & 0x0F);
}

bool cpu_has(const Isa* isa) {
  if (isa == &kIsaAvx512) return __builtin_cpu_supports("avx512f");
  if (isa == &kIsaAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return true;
}

const Isa* const kAll[] = {&kIsaAvx512, &kIsaAvx2, &kIsaGeneric};  // widest first

}  // namespace

PackedWeights pack(const uint8_t* B, const float* delta, const uint8_t* zp, int64_t N, int64_t K, int64_t group_size,
                   int64_t bits) {
  PackedWeights w;
  const int64_t per_lane = 32 / bits, row_bytes = (K * bits + 7) / 8;
  w.N = N, w.K = K, w.group_size = group_size, w.bits = bits, w.G = (K + group_size - 1) / group_size;
  w.P = (N + 16 * kPanelGroup - 1) / (16 * kPanelGroup) * kPanelGroup, w.KB = (K + per_lane - 1) / per_lane;
  w.codes.assign(w.P * w.KB * 16, 0u);
  w.delta.assign(w.P * w.G * 16, 0.f);
  w.zp.assign(w.P * w.G * 16, 0.f);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t p = n / 16, lane = n % 16;
    const uint8_t* row = B + n * row_bytes;
    uint32_t* base = w.codes.data() + ((p / kPanelGroup) * w.KB * kPanelGroup + p % kPanelGroup) * 16 + lane;
    for (int64_t k = 0; k < K; ++k)
      base[(k / per_lane) * kPanelGroup * 16] |= code(row, k, bits) << (bits * (k % per_lane));
    for (int64_t g = 0; g < w.G; ++g) {
      w.delta[(p * w.G + g) * 16 + lane] = delta[n * w.G + g];
      w.zp[(p * w.G + g) * 16 + lane] = static_cast<float>(zp[n * w.G + g]);
    }
  }
  return w;
}

const Isa* select_isa(std::string* error) {
  const char* want = std::getenv("QSLAW_CPU_ISA");
  if (!want || !*want) {
    for (const Isa* isa : kAll)
      if (cpu_has(isa)) return isa;
  }
  for (const Isa* isa : kAll) {
    if (std::strcmp(isa->name, want) != 0) continue;
    if (cpu_has(isa)) return isa;
    *error = std::string("QSLAW_CPU_ISA=") + want + " but this CPU lacks it; unset it or pick one of: " + supported_isas();
    return nullptr;
  }
  *error = std::string("QSLAW_CPU_ISA=") + want + " is not a kernel path; use one of: " + supported_isas();
  return nullptr;
}

std::string supported_isas() {
  std::string out;
  for (const Isa* isa : kAll)
    if (cpu_has(isa)) out += (out.empty() ? "" : ",") + std::string(isa->name);
  return out;
}

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

void dequantize_int4_rows(const uint8_t* B, const float* delta, const uint8_t* zp, float* W, int64_t K, int64_t gs,
                          int64_t n0, int64_t n1) {
  const int64_t G = (K + gs - 1) / gs, row_bytes = (K + 1) / 2;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t g = k / gs;
      W[n * K + k] = delta[n * G + g] * (static_cast<float>(code(B + n * row_bytes, k, 4)) - static_cast<float>(zp[n * G + g]));
    }
}

}  // namespace qslaw
