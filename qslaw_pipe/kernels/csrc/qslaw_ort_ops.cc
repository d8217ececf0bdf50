// onnxruntime custom-op library, domain ai.qslaw:
//   MatMulInt4(A float [..., K], B uint8 [N, ceil(K/2)], delta float [N, G], zp uint8 [N, G]) -> Y [..., N]
//   DequantizeInt4(B, delta, zp) -> W float [N, K]
// attributes K, N (MatMulInt4), group_size. CPU kernels in int4_cpu.cc; CUDA kernels in int4_cuda.cu when
// built with QSLAW_WITH_CUDA. Uses only the ORT API handed to RegisterCustomOps (no link to onnxruntime).
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT
#include "onnxruntime_lite_custom_op.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "int4_cpu.h"
#ifdef QSLAW_WITH_CUDA
#include "int4_cuda.h"
#endif

namespace {

constexpr const char* kDomain = "ai.qslaw";

int64_t attr(const OrtKernelInfo* info, const char* name) {
  return Ort::ConstKernelInfo(info).GetAttribute<int64_t>(name);
}

// Output rows are spread over onnxruntime's own intra-op thread pool (no second pool to oversubscribe).
struct RowJob {
  const float* A;
  const float* asum;
  const uint8_t* B;
  const float* delta;
  const uint8_t* zp;
  float* Y;
  int64_t M, N, K, group_size, rows_per_task;
};

void matmul_task(void* data, size_t i) {
  const auto* j = static_cast<const RowJob*>(data);
  const int64_t n0 = static_cast<int64_t>(i) * j->rows_per_task, n1 = std::min(j->N, n0 + j->rows_per_task);
  qslaw::matmul_int4_rows(j->A, j->asum, j->B, j->delta, j->zp, j->Y, j->M, j->N, j->K, j->group_size, n0, n1);
}

void dequantize_task(void* data, size_t i) {
  const auto* j = static_cast<const RowJob*>(data);
  const int64_t n0 = static_cast<int64_t>(i) * j->rows_per_task, n1 = std::min(j->N, n0 + j->rows_per_task);
  qslaw::dequantize_int4_rows(j->B, j->delta, j->zp, j->Y, j->K, j->group_size, n0, n1);
}

Ort::Status parallel_rows(OrtKernelContext* ctx, void (*fn)(void*, size_t), RowJob& job) {
  const size_t tasks = static_cast<size_t>((job.N + job.rows_per_task - 1) / job.rows_per_task);
  return Ort::Status(Ort::GetApi().KernelContext_ParallelFor(ctx, fn, tasks, 0, &job));
}

struct MatMulInt4 {
  MatMulInt4(const OrtApi*, const OrtKernelInfo* info)
      : K(attr(info, "K")), N(attr(info, "N")), group_size(attr(info, "group_size")) {}

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& A, const Ort::Custom::Tensor<uint8_t>& B,
                      const Ort::Custom::Tensor<float>& delta, const Ort::Custom::Tensor<uint8_t>& zp,
                      Ort::Custom::Tensor<float>& Y) {
    const auto& shape = A.Shape();
    if (shape.empty() || shape.back() != K) return Ort::Status("MatMulInt4: A's last dimension is not K", ORT_INVALID_ARGUMENT);
    if (group_size < 1 || (group_size % 2 && group_size < K))
      return Ort::Status("MatMulInt4: group_size must be even (groups start on a byte) or span K", ORT_INVALID_ARGUMENT);
    const int64_t G = (K + group_size - 1) / group_size;
    if (B.Shape() != std::vector<int64_t>{N, (K + 1) / 2} || delta.Shape() != std::vector<int64_t>{N, G} ||
        zp.Shape() != std::vector<int64_t>{N, G})
      return Ort::Status("MatMulInt4: B, delta or zero point shape does not match K, N, group_size", ORT_INVALID_ARGUMENT);
    std::vector<int64_t> out(shape.begin(), shape.end() - 1);
    out.push_back(N);
    const int64_t M = A.NumberOfElement() / K;
    float* y = Y.Allocate(out);
    std::vector<float> asum(M * G);
    qslaw::group_sums(A.Data(), M, K, group_size, asum.data());
    RowJob job{A.Data(), asum.data(), B.Data(), delta.Data(), zp.Data(), y, M, N, K, group_size, M <= 4 ? 32 : 16};  // 16: one panel of the prefill kernel
    return parallel_rows(ctx, matmul_task, job);
  }
  int64_t K, N, group_size;
};

struct DequantizeInt4 {
  DequantizeInt4(const OrtApi*, const OrtKernelInfo* info) : K(attr(info, "K")), group_size(attr(info, "group_size")) {}

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<uint8_t>& B, const Ort::Custom::Tensor<float>& delta,
                      const Ort::Custom::Tensor<uint8_t>& zp, Ort::Custom::Tensor<float>& W) {
    if (group_size < 1 || (group_size % 2 && group_size < K))
      return Ort::Status("DequantizeInt4: group_size must be even (groups start on a byte) or span K", ORT_INVALID_ARGUMENT);
    if (B.Shape().size() != 2 || B.Shape()[1] != (K + 1) / 2)
      return Ort::Status("DequantizeInt4: B is not [N, ceil(K/2)]", ORT_INVALID_ARGUMENT);
    const int64_t N = B.Shape()[0];
    float* w = W.Allocate({N, K});
    RowJob job{nullptr, nullptr, B.Data(), delta.Data(), zp.Data(), w, 0, N, K, group_size, 16};
    return parallel_rows(ctx, dequantize_task, job);
  }
  int64_t K, group_size;
};

#ifdef QSLAW_WITH_CUDA
struct MatMulInt4Cuda : MatMulInt4 {
  using MatMulInt4::MatMulInt4;
  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& A, const Ort::Custom::Tensor<uint8_t>& B,
                      const Ort::Custom::Tensor<float>& delta, const Ort::Custom::Tensor<uint8_t>& zp,
                      Ort::Custom::Tensor<float>& Y) {
    const auto& shape = A.Shape();
    std::vector<int64_t> out(shape.begin(), shape.end() - 1);
    out.push_back(N);
    const int64_t M = A.NumberOfElement() / K;
    void* stream = Ort::KernelContext(ctx).GetGPUComputeStream();
    float* y = Y.Allocate(out);
    int err = qslaw::matmul_int4_cuda(A.Data(), B.Data(), delta.Data(), zp.Data(), y, M, N, K, group_size, stream);
    return err ? Ort::Status("MatMulInt4 CUDA kernel failed", ORT_FAIL) : Ort::Status{nullptr};
  }
};
#endif

std::once_flag g_once;
std::vector<std::unique_ptr<OrtCustomOp>> g_ops;
Ort::CustomOpDomain* g_domain = nullptr;

}  // namespace

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  try {
    std::call_once(g_once, [] {
      g_domain = new Ort::CustomOpDomain(kDomain);
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4>("MatMulInt4", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<DequantizeInt4>("DequantizeInt4", "CPUExecutionProvider"));
#ifdef QSLAW_WITH_CUDA
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Cuda>("MatMulInt4", "CUDAExecutionProvider"));
#endif
      for (auto& op : g_ops) g_domain->Add(op.get());
    });
    Ort::UnownedSessionOptions(options).Add(*g_domain);
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  }
  return nullptr;
}
