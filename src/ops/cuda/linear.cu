// ops::linear on the GPU through cuBLASLt (a few BF16 rows: skinny_linear.cu):
// y[M,N] (=|+=) x[M,K] · w[N,K]ᵀ + bias, F32 accumulation.
// Weights and activations of one call share a dtype (BF16 in the default mode, F32 under --dtype f32,
// where cuBLASLt's exact F32 compute keeps parity with the CPU); y may be F32 or the activation dtype
// (the head writes F32 logits from BF16 rows). A bias is written into y first and taken with beta = 1.
// The general product under it (matmul.h) serves the backward ops and the fused head + loss too.
#include <cublasLt.h>

#include <algorithm>
#include <bit>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/matmul.h"
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

cudaDataType_t cuda_type(DType d, const char* what) {
  switch (d) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail("{}: no GPU matrix product for {}", what, dtype_name(d));
  }
}

// The largest power of two (at most 256) dividing the address: cuBLASLt's heuristic assumes 256-byte
// aligned matrices unless told otherwise, and a column slice or a chunk of rows may be less aligned.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  return uint32_t(std::min<uintptr_t>(256, address & (~address + 1)));
}

// The problem a cached algorithm was chosen for.
struct Problem {
  int64_t m, n, k, lda, ldb, ldc;
  int types;       // a, c dtypes and the transposes packed
  int alignments;  // log2 of a, b, c alignments packed
  bool operator==(const Problem&) const = default;
};
struct ProblemHash {
  size_t operator()(const Problem& p) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {p.m, p.n, p.k, p.lda, p.ldb, p.ldc, int64_t(p.types), int64_t(p.alignments)})
      h = (h ^ size_t(v)) * 1099511628211ull;
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
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  ~Descriptors() {
    if (op) cublasLtMatmulDescDestroy(op);
    for (auto layout : {a, b, c})
      if (layout) cublasLtMatrixLayoutDestroy(layout);
  }
};

// The algorithm for `problem`, from the cache or (once) from cuBLASLt's heuristic; none if it has none.
std::optional<cublasLtMatmulAlgo_t> algorithm_for(const Problem& problem, const Descriptors& d,
                                                  const uint32_t (&alignments)[3], const char* what) {
  Lt& ctx = lt();
  std::lock_guard<std::mutex> lock(ctx.mutex);
  auto it = ctx.algos.find(problem);
  if (it != ctx.algos.end()) return it->second;
  struct Preference {
    cublasLtMatmulPreference_t handle = nullptr;
    ~Preference() {
      if (handle) cublasLtMatmulPreferenceDestroy(handle);
    }
  } preference;
  SSM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference.handle), "{} preference", what);
  const auto prefer = [&](cublasLtMatmulPreferenceAttributes_t attribute, const auto& value) {
    SSM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference.handle, attribute, &value, sizeof(value)),
                     "{} preference", what);
  };
  prefer(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, ctx.workspace_bytes);
  // cuBLAS's a is our b (see matmul), its b our a; c and d are the same matrix.
  prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignments[1]);
  prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignments[0]);
  prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignments[2]);
  prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignments[2]);
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(ctx.handle, d.op, d.a, d.b, d.c, d.c, preference.handle, 1, &result, &found);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) return std::nullopt;
  return ctx.algos.emplace(problem, result.algo).first->second;
}

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

Matrix matrix_of(const Tensor& t) {
  const int64_t width = t.size(-1);
  return {t.raw(), t.dtype(), t.rows(), width, t.numel() ? t.row_stride() : width};
}

void matmul(const Matrix& a, bool transpose_a, const Matrix& b, bool transpose_b, const Matrix& c, float beta,
            const char* what) {
  const int64_t m = transpose_a ? a.cols : a.rows, k = transpose_a ? a.rows : a.cols;
  const int64_t n = transpose_b ? b.rows : b.cols, kb = transpose_b ? b.cols : b.rows;
  SSM_CHECK(k == kb && c.rows == m && c.cols == n, "{}: a [{}, {}]{} times b [{}, {}]{} into c [{}, {}]", what, a.rows,
            a.cols, transpose_a ? "ᵀ" : "", b.rows, b.cols, transpose_b ? "ᵀ" : "", c.rows, c.cols);
  SSM_CHECK(a.dtype == b.dtype, "{}: a matrix product of {} with {}", what, dtype_name(a.dtype),
            dtype_name(b.dtype));
  if (m == 0 || n == 0) return;
  if (k == 0) {  // c = beta · c
    SSM_CHECK(beta == 0.0f || beta == 1.0f, "{}: an empty product with beta {}", what, beta);
    const size_t element = dtype_size(c.dtype);
    if (beta == 0.0f)
      SSM_CUDA_CHECK(cudaMemset2DAsync(c.data, size_t(c.ld) * element, 0, size_t(n) * element, size_t(m), stream()),
                     "{}: zeroing [{}, {}]", what, m, n);
    return;
  }
  // cuBLASLt is column-major: the row-major c [m, n] is cᵀ [n, m] in its terms, computed as
  // op(b)ᵀ · op(a)ᵀ. Each row-major matrix [rows, cols] is its column-major transpose [cols, rows]
  // with the same ld, so cuBLAS's a is our b (transposed iff transpose_b) and its b our a.
  Descriptors d;
  SSM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "{} descriptor", what);
  const cublasOperation_t op_a = transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  SSM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)),
                   "{} descriptor", what);
  SSM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)),
                   "{} descriptor", what);
  const cudaDataType_t ab_type = cuda_type(a.dtype, what), c_type = cuda_type(c.dtype, what);
  SSM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab_type, uint64_t(b.cols), uint64_t(b.rows), b.ld),
                   "{} layout of b", what);
  SSM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab_type, uint64_t(a.cols), uint64_t(a.rows), a.ld),
                   "{} layout of a", what);
  SSM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, c_type, uint64_t(c.cols), uint64_t(c.rows), c.ld),
                   "{} layout of c", what);

  const uint32_t alignments[3] = {alignment_of(a.data), alignment_of(b.data), alignment_of(c.data)};
  const int log2_alignments = (std::countr_zero(alignments[0]) << 8) | (std::countr_zero(alignments[1]) << 4) |
                              std::countr_zero(alignments[2]);
  const Problem problem{m,
                        n,
                        k,
                        a.ld,
                        b.ld,
                        c.ld,
                        int(a.dtype) * 64 + int(c.dtype) * 4 + int(transpose_a) * 2 + int(transpose_b),
                        log2_alignments};
  const std::optional<cublasLtMatmulAlgo_t> algo = algorithm_for(problem, d, alignments, what);
  SSM_CHECK(algo, "{}: cuBLASLt has no algorithm for [{}, {}]{} x [{}, {}]{} ({} into {})", what, a.rows, a.cols,
            transpose_a ? "ᵀ" : "", b.rows, b.cols, transpose_b ? "ᵀ" : "", dtype_name(a.dtype),
            dtype_name(c.dtype));
  const float alpha = 1.0f;
  Lt& ctx = lt();
  SSM_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, d.op, &alpha, b.data, d.a, a.data, d.b, &beta, c.data, d.c, c.data, d.c,
                                  &*algo, ctx.workspace, ctx.workspace_bytes, stream()),
                   "{}: [{}, {}] x [{}, {}]", what, m, k, k, n);
}

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
  if (bias.defined()) {
    with_activation_type(y.dtype(), "linear", [&]<class T>() {
      bias_kernel<T><<<blocks_for(M * N, 256), 256, 0, stream()>>>(rows_of<T>(y), bias.data<float>(), M, N, accumulate);
      SSM_CUDA_CHECK_LAUNCH("linear bias of [{}, {}]", M, N);
    });
  }
  const float beta = (accumulate || bias.defined()) ? 1.0f : 0.0f;
  if (K == 0) {
    SSM_CHECK(beta == 1.0f, "linear: an empty product needs accumulate or a bias");
    return;
  }
  matmul(matrix_of(x), false, matrix_of(w), true, matrix_of(y), beta, "linear");
}

}  // namespace ssm::ops::cuda
