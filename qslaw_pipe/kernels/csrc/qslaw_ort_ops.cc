// onnxruntime custom-op library, domain ai.qslaw:
//   MatMulInt4(A float [..., K], B uint8 [N, ceil(K/2)], delta float [N, G], zp uint8 [N, G]) -> Y [..., N]
//   MatMulInt8(A float [..., K], B uint8 [N, K], delta float [N, G], zp uint8 [N, G]) -> Y [..., N]
//   DequantizeInt4(B, delta, zp) -> W float [N, K]
// attributes K, N (MatMul*), group_size. CPU kernels: int4_cpu.h (packing, ISA dispatch) and int4_kernels.inc;
// CUDA kernels (MatMulInt4 only) in int4_cuda.cu when built with QSLAW_WITH_CUDA. Uses only the ORT API handed to RegisterCustomOps (no link to onnxruntime).
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT
#include "onnxruntime_lite_custom_op.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "int4_cpu.h"
#ifdef QSLAW_WITH_CUDA
#include "int4_cuda.h"
#endif

namespace {

constexpr const char* kDomain = "ai.qslaw";
#define QSLAW_EXPORT __attribute__((visibility("default")))

int64_t attr(const OrtKernelInfo* info, const char* name) {
  return Ort::ConstKernelInfo(info).GetAttribute<int64_t>(name);
}

// Tasks: blocks of output columns (whole decode / prefill panel blocks) x blocks of rows of A, spread over
// onnxruntime's own intra-op thread pool (no second pool to oversubscribe). Rows are split only in prefill
// when there are too few column blocks to keep every core busy (each row block dequantizes its panels again).
struct MatMulJob {
  const qslaw::Isa* isa;
  qslaw::PackedView w;
  const float* A;
  const float* asum;
  float* Y;
  int64_t M, panels_per_task, rows_per_task, column_tasks;
};

void matmul_task(void* data, size_t i) {
  const auto* j = static_cast<const MatMulJob*>(data);
  const int64_t c = static_cast<int64_t>(i) % j->column_tasks, r = static_cast<int64_t>(i) / j->column_tasks;
  const int64_t p0 = c * j->panels_per_task, p1 = std::min(j->w.P, p0 + j->panels_per_task);
  const int64_t m0 = r * j->rows_per_task, rows = std::min(j->M - m0, j->rows_per_task);
  j->isa->matmul(j->w, j->A + m0 * j->w.K, j->asum + m0 * j->w.G, j->Y + m0 * j->w.N, rows, p0, p1);
}

const int64_t kCores = std::max(1u, std::thread::hardware_concurrency());
constexpr int64_t kInlineMacs = 1 << 19;  // below this much work a call runs on the calling thread alone

struct RowJob {
  const uint8_t* B;
  const float* delta;
  const uint8_t* zp;
  float* Y;
  int64_t N, K, group_size, rows_per_task;
};

void dequantize_task(void* data, size_t i) {
  const auto* j = static_cast<const RowJob*>(data);
  const int64_t n0 = static_cast<int64_t>(i) * j->rows_per_task, n1 = std::min(j->N, n0 + j->rows_per_task);
  qslaw::dequantize_int4_rows(j->B, j->delta, j->zp, j->Y, j->K, j->group_size, n0, n1);
}

// Tasks go to the pool in at most two contiguous batches per core: handing out decode tasks of ~1 us one by
// one costs more than they take (the pool's size is not visible to a custom op; the core count bounds it).
Ort::Status parallel(OrtKernelContext* ctx, void (*fn)(void*, size_t), int64_t tasks, void* job) {
  const size_t batches = static_cast<size_t>(2 * kCores), total = static_cast<size_t>(tasks);
  return Ort::Status(Ort::GetApi().KernelContext_ParallelFor(ctx, fn, total, std::min(total, batches), job));
}

// MatMulInt4 / MatMulInt8: constant weights (the exporters' initializers) are packed once when the session
// builds the kernel; weights fed at run time are packed on every call.
template <int BITS>
struct MatMulIntN {
  MatMulIntN(const OrtApi*, const OrtKernelInfo* info, bool on_host = true)
      : K(attr(info, "K")), N(attr(info, "N")), group_size(attr(info, "group_size")) {
    if (group_size < 1) error = std::string(name()) + ": group_size must be >= 1";
    if (!on_host || !error.empty()) return;  // device kernels read the inputs as they come
    isa = qslaw::select_isa(&error);
    if (!error.empty()) return;
    Ort::ConstKernelInfo ki(info);
    int constant[3] = {0, 0, 0};
    Ort::ConstValue in[3] = {Ort::ConstValue{nullptr}, Ort::ConstValue{nullptr}, Ort::ConstValue{nullptr}};
    for (int i = 0; i < 3; ++i) in[i] = ki.GetTensorConstantInput(static_cast<size_t>(i + 1), &constant[i]);
    if (!(constant[0] && constant[1] && constant[2])) return;
    error = check(in[0].GetTensorTypeAndShapeInfo().GetShape(), in[1].GetTensorTypeAndShapeInfo().GetShape(),
                  in[2].GetTensorTypeAndShapeInfo().GetShape());
    if (error.empty())
      packed = std::make_unique<qslaw::PackedWeights>(qslaw::pack(in[0].GetTensorData<uint8_t>(), in[1].GetTensorData<float>(),
                                                                  in[2].GetTensorData<uint8_t>(), N, K, group_size, BITS));
  }

  static const char* name() { return BITS == 4 ? "MatMulInt4" : "MatMulInt8"; }

  std::string check(const std::vector<int64_t>& b, const std::vector<int64_t>& d, const std::vector<int64_t>& z) const {
    const int64_t G = (K + group_size - 1) / group_size;
    if (b != std::vector<int64_t>{N, (K * BITS + 7) / 8} || d != std::vector<int64_t>{N, G} || z != std::vector<int64_t>{N, G})
      return std::string(name()) + ": B, delta or zero point shape does not match K, N, group_size";
    return {};
  }

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& A, const Ort::Custom::Tensor<uint8_t>& B,
                      const Ort::Custom::Tensor<float>& delta, const Ort::Custom::Tensor<uint8_t>& zp,
                      Ort::Custom::Tensor<float>& Y) {
    if (!error.empty()) return Ort::Status(error.c_str(), ORT_INVALID_ARGUMENT);
    const auto& shape = A.Shape();
    if (shape.empty() || shape.back() != K)
      return Ort::Status((std::string(name()) + ": A's last dimension is not K").c_str(), ORT_INVALID_ARGUMENT);
    qslaw::PackedWeights local;
    if (!packed) {
      const std::string bad = check(B.Shape(), delta.Shape(), zp.Shape());
      if (!bad.empty()) return Ort::Status(bad.c_str(), ORT_INVALID_ARGUMENT);
      local = qslaw::pack(B.Data(), delta.Data(), zp.Data(), N, K, group_size, BITS);
    }
    const qslaw::PackedView w = packed ? packed->view() : local.view();
    std::vector<int64_t> out(shape.begin(), shape.end() - 1);
    out.push_back(N);
    const int64_t M = A.NumberOfElement() / K;
    float* y = Y.Allocate(out);
    if (M == 0) return Ort::Status{nullptr};
    std::vector<float> asum(M * w.G);  // (read by the 4-bit decode kernels only)
    if (BITS == 4) qslaw::group_sums(A.Data(), M, K, group_size, asum.data());
    const int64_t per_task = isa->panels_per_task(M), columns = (w.P + per_task - 1) / per_task;
    int64_t rows = M;
    if (M > 4 && columns < 4 * kCores) {  // prefill with few columns: rows too, in multiples of 8 (the tile)
      const int64_t row_tasks = std::min((4 * kCores + columns - 1) / columns, (M + 7) / 8);
      rows = ((M + row_tasks - 1) / row_tasks + 7) / 8 * 8;
    }
    MatMulJob job{isa, w, A.Data(), asum.data(), y, M, per_task, rows, columns};
    const int64_t tasks = columns * ((M + rows - 1) / rows);
    if (M * N * K < kInlineMacs) {  // waking the pool costs more than the work
      for (int64_t i = 0; i < tasks; ++i) matmul_task(&job, static_cast<size_t>(i));
      return Ort::Status{nullptr};
    }
    return parallel(ctx, matmul_task, tasks, &job);
  }

  int64_t K, N, group_size;
  const qslaw::Isa* isa = nullptr;
  std::string error;
  std::unique_ptr<qslaw::PackedWeights> packed;
};

struct DequantizeInt4 {
  DequantizeInt4(const OrtApi*, const OrtKernelInfo* info) : K(attr(info, "K")), group_size(attr(info, "group_size")) {}

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<uint8_t>& B, const Ort::Custom::Tensor<float>& delta,
                      const Ort::Custom::Tensor<uint8_t>& zp, Ort::Custom::Tensor<float>& W) {
    if (group_size < 1) return Ort::Status("DequantizeInt4: group_size must be >= 1", ORT_INVALID_ARGUMENT);
    if (B.Shape().size() != 2 || B.Shape()[1] != (K + 1) / 2)
      return Ort::Status("DequantizeInt4: B is not [N, ceil(K/2)]", ORT_INVALID_ARGUMENT);
    const int64_t N = B.Shape()[0];
    float* w = W.Allocate({N, K});
    RowJob job{B.Data(), delta.Data(), zp.Data(), w, N, K, group_size, 16};
    return parallel(ctx, dequantize_task, (N + 15) / 16, &job);
  }
  int64_t K, group_size;
};

#ifdef QSLAW_WITH_CUDA
struct MatMulInt4Cuda : MatMulIntN<4> {
  MatMulInt4Cuda(const OrtApi* api, const OrtKernelInfo* info) : MatMulIntN<4>(api, info, false) {}
  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& A, const Ort::Custom::Tensor<uint8_t>& B,
                      const Ort::Custom::Tensor<float>& delta, const Ort::Custom::Tensor<uint8_t>& zp,
                      Ort::Custom::Tensor<float>& Y) {
    if (!error.empty()) return Ort::Status(error.c_str(), ORT_INVALID_ARGUMENT);
    if (group_size % 2 && group_size < K)
      return Ort::Status("MatMulInt4 (CUDA): group_size must be even (groups start on a byte) or span K", ORT_INVALID_ARGUMENT);
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

// The CPU kernel path sessions of this process get ($QSLAW_CPU_ISA or the widest supported), and all supported
// paths; read by the benches and tests through ctypes.
extern "C" QSLAW_EXPORT const char* QslawCpuIsa() {
  std::string error;
  const qslaw::Isa* isa = qslaw::select_isa(&error);
  return isa ? isa->name : "unavailable";
}

extern "C" QSLAW_EXPORT const char* QslawCpuIsas() {
  static const std::string all = qslaw::supported_isas();
  return all.c_str();
}

extern "C" QSLAW_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  try {
    std::call_once(g_once, [] {
      g_domain = new Ort::CustomOpDomain(kDomain);
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulIntN<4>>("MatMulInt4", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulIntN<8>>("MatMulInt8", "CPUExecutionProvider"));
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
