// onnxruntime custom-op library, domain ai.qslaw:
//   MatMulInt4(A float [..., K], B uint8 [N, ceil(K/2)], delta float [N, G], zp uint8 [N, G]) -> Y [..., N]
//   DequantizeInt4(B, delta, zp) -> W float [N, K]
// attributes K, N (MatMulInt4), group_size. CPU kernels in int4_cpu.cc; CUDA kernels in int4_cuda.cu when
// built with QSLAW_WITH_CUDA. Uses only the ORT API handed to RegisterCustomOps (no link to onnxruntime).
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT
#include "onnxruntime_lite_custom_op.h"

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

struct MatMulInt4 {
  MatMulInt4(const OrtApi*, const OrtKernelInfo* info)
      : K(attr(info, "K")), N(attr(info, "N")), group_size(attr(info, "group_size")) {}

  Ort::Status Compute(const Ort::Custom::Tensor<float>& A, const Ort::Custom::Tensor<uint8_t>& B,
                      const Ort::Custom::Tensor<float>& delta, const Ort::Custom::Tensor<uint8_t>& zp,
                      Ort::Custom::Tensor<float>& Y) {
    const auto& shape = A.Shape();
    if (shape.empty() || shape.back() != K) return Ort::Status("MatMulInt4: A's last dimension is not K", ORT_INVALID_ARGUMENT);
    const int64_t G = (K + group_size - 1) / group_size;
    if (B.Shape() != std::vector<int64_t>{N, (K + 1) / 2} || delta.Shape() != std::vector<int64_t>{N, G} ||
        zp.Shape() != std::vector<int64_t>{N, G})
      return Ort::Status("MatMulInt4: B, delta or zero point shape does not match K, N, group_size", ORT_INVALID_ARGUMENT);
    std::vector<int64_t> out(shape.begin(), shape.end() - 1);
    out.push_back(N);
    const int64_t M = A.NumberOfElement() / K;
    float* y = Y.Allocate(out);
    qslaw::matmul_int4_cpu(A.Data(), B.Data(), delta.Data(), zp.Data(), y, M, N, K, group_size);
    return Ort::Status{nullptr};
  }
  int64_t K, N, group_size;
};

struct DequantizeInt4 {
  DequantizeInt4(const OrtApi*, const OrtKernelInfo* info) : K(attr(info, "K")), group_size(attr(info, "group_size")) {}

  Ort::Status Compute(const Ort::Custom::Tensor<uint8_t>& B, const Ort::Custom::Tensor<float>& delta,
                      const Ort::Custom::Tensor<uint8_t>& zp, Ort::Custom::Tensor<float>& W) {
    const int64_t N = B.Shape()[0];
    if (B.Shape().size() != 2 || B.Shape()[1] != (K + 1) / 2)
      return Ort::Status("DequantizeInt4: B is not [N, ceil(K/2)]", ORT_INVALID_ARGUMENT);
    float* w = W.Allocate({N, K});
    qslaw::dequantize_int4_cpu(B.Data(), delta.Data(), zp.Data(), w, N, K, group_size);
    return Ort::Status{nullptr};
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
