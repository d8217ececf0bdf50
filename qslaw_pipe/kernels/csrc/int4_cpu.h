// Int4 / int8 matmul on the CPU for onnxruntime's ai.qslaw ops.
//
// Input layout (the fold artifact's): B uint8 [N, ceil(K * bits / 8)], codes of row n along k, for 4 bits two
// per byte, low nibble first; delta float [N, G], zp uint8 [N, G], G = ceil(K / group_size);
// W[n, k] = delta * (code - zp), Y [M, N] = A [M, K] @ W^T.
//
// Kernels read a packed copy made once per session (pack()): panels of 16 output columns; in a panel, one
// uint32 lane per column holds 32 / bits consecutive codes along k (8 nibbles or 4 bytes), so one 64-byte load
// gives 16 columns x 8 (or 4) inputs and the code of input j is (lane >> bits * j) & mask. Panels come in
// groups of kPanelGroup whose blocks are interleaved along k ([group][k block][panel][16]), so a decode task
// reads one sequential stream. delta and zp are stored per panel and group as 16 floats. Padded columns and
// panels have delta = zp = 0 (weights 0).
//
// The vector kernels exist once (int4_kernels.inc) and are compiled per ISA (int4_isa_*.cc, each with its own
// -m flags); select_isa() picks the widest one this CPU runs, or the one $QSLAW_CPU_ISA names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qslaw {

constexpr int64_t kPanelGroup = 4;

struct PackedView {  // what the ISA kernels read (plain pointers: no library types cross the ISA boundary)
  const uint32_t* codes;  // [P / kPanelGroup][KB][kPanelGroup][16]; P a multiple of kPanelGroup
  const float* delta;     // [P][G][16]
  const float* zp;        // [P][G][16]
  int64_t N, K, group_size, G, bits, P, KB;
};

struct PackedWeights {
  std::vector<uint32_t> codes;
  std::vector<float> delta, zp;
  int64_t N = 0, K = 0, group_size = 0, G = 0, bits = 4, P = 0, KB = 0;
  PackedView view() const { return {codes.data(), delta.data(), zp.data(), N, K, group_size, G, bits, P, KB}; }
};

PackedWeights pack(const uint8_t* B, const float* delta, const uint8_t* zp, int64_t N, int64_t K, int64_t group_size,
                   int64_t bits);

struct Isa {
  const char* name;
  // how many panels one parallel task takes at this M (so tasks hand out whole decode / prefill blocks)
  int64_t (*panels_per_task)(int64_t M);
  // Y[:, 16 * p0 : 16 * p1) for panels [p0, p1); asum [M, G]: sums of A over each group (used for 4 bits)
  void (*matmul)(const PackedView& w, const float* A, const float* asum, float* Y, int64_t M, int64_t p0, int64_t p1);
};

// The ISA kernels to run: $QSLAW_CPU_ISA (generic, avx2, avx512) when set, else the widest this CPU supports;
// nullptr with `error` set when the one named is unknown or this CPU lacks it.
const Isa* select_isa(std::string* error);
// Comma-separated names of the paths this CPU can run, widest first.
std::string supported_isas();

// Per row m and group g of A: the sum of A over the group's inputs, asum [M, G].
void group_sums(const float* A, int64_t M, int64_t K, int64_t group_size, float* asum);

void dequantize_int4_rows(const uint8_t* B, const float* delta, const uint8_t* zp, float* W, int64_t K,
                          int64_t group_size, int64_t n0, int64_t n1);

}  // namespace qslaw
