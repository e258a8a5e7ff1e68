// ops::linear on the GPU through cuBLASLt (a few BF16 rows: skinny_linear.cu): y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias, F32 accumulation.
// Weights and activations of one call share a dtype (BF16 in the default mode, F32 under --dtype f32,
// where cuBLASLt's exact F32 compute keeps parity with the CPU); y may be F32 or the activation dtype
// (the head writes F32 logits from BF16 rows). A bias is written into y first and taken with beta = 1.
#include <cublasLt.h>

#include <cstring>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/skinny_linear.h"

namespace ssm::ops::cuda {

namespace {

#define SSM_CUBLAS_CHECK(call, ...)                                                                         \
  do {                                                                                                      \
    const cublasStatus_t ssm_status_ = (call);                                                              \
    if (ssm_status_ != CUBLAS_STATUS_SUCCESS)                                                               \
      fail("cuBLASLt error in {}: {} ({})", fmt::format(__VA_ARGS__), cublasLtGetStatusString(ssm_status_), \
           #call);                                                                                          \
  } while (0)

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail("linear: no GPU matrix product for {}", dtype_name(d));
  }
}

// The problem a cached algorithm was chosen for.
struct Problem {
  int64_t M, N, K, ldx, ldy;
  int types;  // w, x, y dtypes packed
  bool operator==(const Problem&) const = default;
};
struct ProblemHash {
  size_t operator()(const Problem& p) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {p.M, p.N, p.K, p.ldx, p.ldy, int64_t(p.types)}) h = (h ^ size_t(v)) * 1099511628211ull;
    return h;
  }
};

// One cuBLASLt handle, its workspace and the algorithms chosen so far (the heuristic costs more than
// a small product, so it runs once per shape).
struct Lt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
  std::mutex mutex;
  std::unordered_map<Problem, cublasLtMatmulAlgo_t, ProblemHash> algos;

  Lt() {
    SSM_CUBLAS_CHECK(cublasLtCreate(&handle), "creating the cuBLASLt handle");
    SSM_CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes), "allocating the cuBLASLt workspace");
  }
};

Lt& lt() {
  static Lt instance;
  return instance;
}

struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
  ~Descriptors() {
    if (op) cublasLtMatmulDescDestroy(op);
    for (auto layout : {w, x, y})
      if (layout) cublasLtMatrixLayoutDestroy(layout);
  }
};

// y[m, n] = bias[n] (accumulate: +=), the bias pass before the product.
template <class T>
__global__ void bias_kernel(Rows<T> y, const float* bias, int64_t M, int64_t N, bool accumulate) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= M * N) return;
  const int64_t m = i / N, n = i % N;
  const float base = accumulate ? to_float(y.at(m, n)) : 0.0f;
  y.at(m, n) = from_float<T>(base + bias[n]);
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y, bool accumulate) {
  check_on_gpu("linear", {&x, &w, &y});
  SSM_CHECK(w.dim() == 2 && w.is_contiguous(), "linear: w must be a contiguous matrix, got {}", shape_str(w.shape()));
  const int64_t N = w.size(0), K = w.size(1);
  SSM_CHECK(x.has_uniform_rows() && x.size(-1) == K, "linear: x must be rows [..., {}] to match w {}, got {}", K,
            shape_str(w.shape()), shape_str(x.shape()));
  SSM_CHECK(y.has_uniform_rows() && y.size(-1) == N && y.rows() == x.rows(),
            "linear: y must be rows [{}, {}] for x {} and w {}, got {}", x.rows(), N, shape_str(x.shape()),
            shape_str(w.shape()), shape_str(y.shape()));
  SSM_CHECK(w.dtype() == x.dtype(), "linear: weights {} with activations {}: load the model in the activation dtype",
            dtype_name(w.dtype()), dtype_name(x.dtype()));
  SSM_CHECK(is_activation_dtype(x.dtype()) && is_activation_dtype(y.dtype()),
            "linear: GPU activations must be F32 or BF16, got x {} and y {}", dtype_name(x.dtype()),
            dtype_name(y.dtype()));
  if (bias.defined())
    SSM_CHECK(bias.device() == Device::CUDA && bias.dtype() == DType::F32 && bias.dim() == 1 && bias.size(0) == N,
              "linear: bias must be F32 [{}] on the GPU", N);
  const int64_t M = x.rows();
  if (M == 0 || N == 0) return;
  if (K > 0 && try_skinny_linear(x, w, bias, y, accumulate)) return;
  const int64_t ldx = x.numel() ? x.row_stride() : K, ldy = y.row_stride();
  if (bias.defined()) {
    with_activation_type(y.dtype(), "linear", [&]<class T>() {
      bias_kernel<T><<<blocks_for(M * N, 256), 256, 0, stream()>>>(rows_of<T>(y), bias.data<float>(), M, N, accumulate);
      SSM_CUDA_CHECK_LAUNCH("linear bias of [{}, {}]", M, N);
    });
  }
  const float alpha = 1.0f, beta = (accumulate || bias.defined()) ? 1.0f : 0.0f;
  if (K == 0) {
    SSM_CHECK(beta == 1.0f, "linear: an empty product needs accumulate or a bias");
    return;
  }

  Lt& ctx = lt();
  const cudaDataType_t wt = cuda_type(w.dtype()), xt = cuda_type(x.dtype()), yt = cuda_type(y.dtype());
  // Column-major view: yᵀ [N, M] = (w [K, N] column-major)ᵀ · xᵀ [K, M].
  Descriptors d;
  SSM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "linear descriptor");
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  SSM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)),
                   "linear descriptor");
  SSM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)),
                   "linear descriptor");
  SSM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.w, wt, uint64_t(K), uint64_t(N), K), "linear layout of w");
  SSM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.x, xt, uint64_t(K), uint64_t(M), ldx), "linear layout of x");
  SSM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.y, yt, uint64_t(N), uint64_t(M), ldy), "linear layout of y");

  const Problem problem{M, N, K, ldx, ldy, int(w.dtype()) * 64 + int(x.dtype()) * 8 + int(y.dtype())};
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lock(ctx.mutex);
    auto it = ctx.algos.find(problem);
    if (it == ctx.algos.end()) {
      cublasLtMatmulPreference_t preference;
      SSM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference), "linear preference");
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ctx.workspace_bytes,
                                           sizeof(ctx.workspace_bytes));
      cublasLtMatmulHeuristicResult_t result;
      int found = 0;
      const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(ctx.handle, d.op, d.w, d.x, d.y, d.y, preference,
                                                                   1, &result, &found);
      cublasLtMatmulPreferenceDestroy(preference);
      SSM_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0,
                "linear: cuBLASLt has no algorithm for [{}, {}] x [{}, {}]ᵀ ({} weights, {} into {})", M, K, N, K,
                dtype_name(w.dtype()), dtype_name(x.dtype()), dtype_name(y.dtype()));
      it = ctx.algos.emplace(problem, result.algo).first;
    }
    algo = it->second;
  }
  SSM_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, d.op, &alpha, w.raw(), d.w, x.raw(), d.x, &beta, y.raw(), d.y, y.raw(),
                                  d.y, &algo, ctx.workspace, ctx.workspace_bytes, stream()),
                   "linear [{}, {}] x [{}, {}]ᵀ", M, K, N, K);
}

}  // namespace ssm::ops::cuda
