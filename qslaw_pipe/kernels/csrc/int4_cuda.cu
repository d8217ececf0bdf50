#include <cuda_runtime.h>

#include "int4_cuda.h"

namespace qslaw {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kTile = 16;

// One warp per (m, n): lanes stride over the row's bytes, two codes per byte, dequantized in registers.
__global__ void gemv_int4(const float* __restrict__ A, const uint8_t* __restrict__ B, const float* __restrict__ delta,
                          const uint8_t* __restrict__ zp, float* __restrict__ Y, int64_t N, int64_t K, int64_t gs) {
  const int lane = threadIdx.x % kWarp;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t m = blockIdx.y;
  if (n >= N) return;
  const int64_t G = (K + gs - 1) / gs, row_bytes = (K + 1) / 2;
  const uint8_t* row = B + n * row_bytes;
  const float* a = A + m * K;
  float acc = 0.f;
  for (int64_t j = lane; j < row_bytes; j += kWarp) {
    const uint8_t byte = row[j];
    const int64_t k = 2 * j;
    const int64_t g = k / gs;
    acc += a[k] * delta[n * G + g] * (static_cast<float>(byte & 0x0F) - static_cast<float>(zp[n * G + g]));
    if (k + 1 < K) {
      const int64_t g1 = (k + 1) / gs;
      acc += a[k + 1] * delta[n * G + g1] * (static_cast<float>(byte >> 4) - static_cast<float>(zp[n * G + g1]));
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
  if (lane == 0) Y[m * N + n] = acc;
}

__global__ void dequantize_int4(const uint8_t* __restrict__ B, const float* __restrict__ delta,
                                const uint8_t* __restrict__ zp, float* __restrict__ W, int64_t N, int64_t K, int64_t gs) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * K) return;
  const int64_t n = i / K, k = i % K, G = (K + gs - 1) / gs, g = k / gs;
  const uint8_t byte = B[n * ((K + 1) / 2) + k / 2];
  const float code = static_cast<float>((k & 1) ? (byte >> 4) : (byte & 0x0F));
  W[i] = delta[n * G + g] * (code - static_cast<float>(zp[n * G + g]));
}

// Y [M, N] = A [M, K] @ W [N, K]^T, shared-memory tiles.
__global__ void sgemm_nt(const float* __restrict__ A, const float* __restrict__ W, float* __restrict__ Y, int64_t M,
                         int64_t N, int64_t K) {
  __shared__ float as[kTile][kTile];
  __shared__ float ws[kTile][kTile + 1];
  const int64_t m = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.y;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const int64_t wn = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.y;
  float acc = 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    as[threadIdx.y][threadIdx.x] = (m < M && k0 + threadIdx.x < K) ? A[m * K + k0 + threadIdx.x] : 0.f;
    ws[threadIdx.y][threadIdx.x] = (wn < N && k0 + threadIdx.x < K) ? W[wn * K + k0 + threadIdx.x] : 0.f;
    __syncthreads();
    for (int t = 0; t < kTile; ++t) acc += as[threadIdx.y][t] * ws[threadIdx.x][t];
    __syncthreads();
  }
  if (m < M && n < N) Y[m * N + n] = acc;
}

}  // namespace

int dequantize_int4_cuda(const uint8_t* B, const float* delta, const uint8_t* zp, float* W, int64_t N, int64_t K,
                         int64_t group_size, void* stream) {
  const int threads = 256;
  const int64_t blocks = (N * K + threads - 1) / threads;
  dequantize_int4<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(B, delta, zp, W, N, K,
                                                                                                    group_size);
  return static_cast<int>(cudaGetLastError());
}

int matmul_int4_cuda(const float* A, const uint8_t* B, const float* delta, const uint8_t* zp, float* Y, int64_t M,
                     int64_t N, int64_t K, int64_t group_size, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (M <= 8) {
    dim3 grid(static_cast<unsigned>((N + kWarpsPerBlock - 1) / kWarpsPerBlock), static_cast<unsigned>(M));
    gemv_int4<<<grid, kWarp * kWarpsPerBlock, 0, s>>>(A, B, delta, zp, Y, N, K, group_size);
    return static_cast<int>(cudaGetLastError());
  }
  float* W = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&W), sizeof(float) * N * K, s);
  if (err != cudaSuccess) return static_cast<int>(err);
  int rc = dequantize_int4_cuda(B, delta, zp, W, N, K, group_size, stream);
  if (rc == 0) {
    dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
    sgemm_nt<<<grid, dim3(kTile, kTile), 0, s>>>(A, W, Y, M, N, K);
    rc = static_cast<int>(cudaGetLastError());
  }
  cudaFreeAsync(W, s);
  return rc;
}

}  // namespace qslaw
