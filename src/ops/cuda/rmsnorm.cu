// ops::rmsnorm, ops::add_rmsnorm and ops::gated_rmsnorm on the GPU: one block per (row, group)
// segment, sums in F32. rmsnorm is the gated norm without a gate and with one group per row, and
// add_rmsnorm its z added to x first, so all three run one kernel.
//
// Each thread keeps up to kCached packs of its segment in registers between the sum of squares and
// the scaled write, so a segment of up to kMaxThreads · kCached packs (8192 F32 or 16384 BF16 values)
// is read from memory once; the rest of a longer one is read again (from L2). y may alias x or z:
// block_sum's barrier comes after every read of the sum pass and before any write, and each element
// is written only by the thread that read it.
#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"
#include "ops/cuda/pdl.cuh"
#include "ops/cuda/reduce.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kCached = 4;
constexpr int kMaxThreads = 512;

// Where the gate silu(z) goes: nowhere (no z), after the norm (y = norm(x) · w · silu(z)), or before
// it (y = norm(x · silu(z)) · w); or z is a residual branch's output: x += scale · z (rounded to T and
// written back to x), then y = norm(x) · w.
enum class Gate { None, AfterNorm, BeforeNorm, Add };

// One block's segment: group_size channels of one row.
template <class T, int N, Gate G>
struct Segment {
  const T* x;
  const T* z;
  const float* w;
  T* y;
  T* x_out;  // Add: where the sum goes (x itself)
  float z_scale;

  // At pack p: the values to normalise (x, or x · silu(z) before the norm), and silu(z) after it.
  __device__ __forceinline__ void load(int64_t p, float (&v)[N], float (&gate)[N]) const {
    load_pack<N>(x + p * N, v);
    if constexpr (G != Gate::None) {
      float zv[N];
      load_pack<N>(z + p * N, zv);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        if constexpr (G == Gate::BeforeNorm) v[i] *= silu_of<T>(zv[i]);
        else if constexpr (G == Gate::Add) v[i] = to_float(from_float<T>(v[i] + z_scale * zv[i]));
        else gate[i] = silu_of<T>(zv[i]);
      }
    }
  }

  __device__ __forceinline__ void store(int64_t p, const float (&v)[N], const float (&gate)[N], float inv_rms) const {
    float weight[N], out[N];
    load_pack<N>(w + p * N, weight);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      out[i] = v[i] * inv_rms * weight[i];
      if constexpr (G == Gate::AfterNorm) out[i] *= gate[i];
    }
    store_pack<N>(y + p * N, out);
    if constexpr (G == Gate::Add) store_pack<N>(x_out + p * N, v);
  }
};

template <class T, int N, Gate G>
__global__ void __launch_bounds__(kMaxThreads)
    norm_kernel(Rows<const T> x, Rows<const T> z, const float* w, Rows<T> y, int64_t groups, int64_t group_size,
                float eps, float z_scale) {
  pdl::wait_for_previous_grid();  // launched overlapped (pdl.cuh): nothing read before
  pdl::let_next_grid_start();
  const int64_t row = blockIdx.x / groups, c0 = blockIdx.x % groups * group_size;
  const Segment<T, N, G> seg{&x.at(row, c0),
                             G == Gate::None ? nullptr : &z.at(row, c0),
                             w + c0,
                             &y.at(row, c0),
                             G == Gate::Add ? const_cast<T*>(&x.at(row, c0)) : nullptr,
                             z_scale};
  const int64_t packs = group_size / N, stride = blockDim.x;
  float v[kCached][N], gate[kCached][N], sum_sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int64_t p = k * stride + threadIdx.x;
    if (p < packs) {
      seg.load(p, v[k], gate[k]);
#pragma unroll
      for (int i = 0; i < N; ++i) sum_sq += v[k][i] * v[k][i];
    }
  }
  for (int64_t p = kCached * stride + threadIdx.x; p < packs; p += stride) {
    float u[N], g[N];
    seg.load(p, u, g);
#pragma unroll
    for (int i = 0; i < N; ++i) sum_sq += u[i] * u[i];
  }
  const float inv_rms = 1.0f / sqrtf(block_sum(sum_sq) / float(group_size) + eps);
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int64_t p = k * stride + threadIdx.x;
    if (p < packs) seg.store(p, v[k], gate[k], inv_rms);
  }
  for (int64_t p = kCached * stride + threadIdx.x; p < packs; p += stride) {
    float u[N], g[N];
    seg.load(p, u, g);
    seg.store(p, u, g, inv_rms);
  }
}

// Threads per block: one pack each up to 256 packs, then up to kCached each, then kMaxThreads.
int norm_threads(int64_t packs) {
  if (packs <= 256) return threads_for(packs, 256);
  return packs <= 256 * kCached ? 256 : kMaxThreads;
}

// Both ops once their arguments are checked: x, y (and z) rows of one shape and activation dtype.
void run_norm(const char* op, const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, Gate gate,
              float eps, Tensor& y, float z_scale = 1.0f) {
  const int64_t width = x.size(-1), rows = x.rows();
  if (rows == 0 || width == 0) return;
  const int64_t groups = width / group_size;
  SSM_CHECK(rows * groups < (int64_t(1) << 31), "{}: {} rows of {} groups is more than one launch takes", op, rows,
            groups);
  with_activation_type(x.dtype(), op, [&]<class T>() {
    const bool fits = group_size % kPack<T> == 0 && packs_fit(kPack<T>, {&x, &z, &w, &y});
    with_pack<T>(fits, [&]<int N>() {
      const Rows<const T> zr = z.defined() ? rows_of<const T>(z) : Rows<const T>{nullptr, 0};
      const int threads = norm_threads(group_size / N);
      auto launch = [&]<Gate G>() {
        SSM_CUDA_CHECK(pdl::launch_overlapped(norm_kernel<T, N, G>, dim3(unsigned(rows * groups)), dim3(threads), 0,
                                              stream(), rows_of<const T>(x), zr, w.data<float>(), rows_of<T>(y),
                                              groups, group_size, eps, z_scale),
                       "{} of {} in groups of {}", op, shape_str(x.shape()), group_size);
      };
      if (gate == Gate::None) launch.template operator()<Gate::None>();
      else if (gate == Gate::AfterNorm) launch.template operator()<Gate::AfterNorm>();
      else if (gate == Gate::Add) launch.template operator()<Gate::Add>();
      else launch.template operator()<Gate::BeforeNorm>();
    });
  });
}

}  // namespace

void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  check_on_gpu("rmsnorm", {&x, &w, &y});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()),
            "rmsnorm: x must be F32 or BF16 rows [..., W], got {}", describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(is_gpu_vector(w, width), "rmsnorm: w must be F32 [{}] for x {}, got {}", width, describe(x), describe(w));
  SSM_CHECK(is_gpu_rows(y, x.dtype(), x.shape()), "rmsnorm: y must be rows of x's shape and dtype ({}), got {}",
            describe(x), describe(y));
  run_norm("rmsnorm", x, Tensor(), w, width, Gate::None, eps, y);
}

void add_rmsnorm(Tensor& h, const Tensor& delta, float delta_scale, const Tensor& w, float eps, Tensor& y) {
  check_on_gpu("add_rmsnorm", {&h, &delta, &w, &y});
  SSM_CHECK(is_gpu_rows(h, h.dtype()) && is_activation_dtype(h.dtype()),
            "add_rmsnorm: h must be F32 or BF16 rows [..., W], got {}", describe(h));
  const int64_t width = h.size(-1);
  SSM_CHECK(is_gpu_rows(delta, h.dtype(), h.shape()), "add_rmsnorm: delta must be rows of h's shape and dtype ({}), got {}",
            describe(h), describe(delta));
  SSM_CHECK(is_gpu_vector(w, width), "add_rmsnorm: w must be F32 [{}] for h {}, got {}", width, describe(h), describe(w));
  SSM_CHECK(is_gpu_rows(y, h.dtype(), h.shape()), "add_rmsnorm: y must be rows of h's shape and dtype ({}), got {}",
            describe(h), describe(y));
  run_norm("add_rmsnorm", h, delta, w, width, Gate::Add, eps, y, delta_scale);
}

void gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, bool norm_before_gate,
                   float eps, Tensor& y) {
  check_on_gpu("gated_rmsnorm", {&x, &w, &y});
  if (z.defined()) check_on_gpu("gated_rmsnorm", {&z});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()),
            "gated_rmsnorm: x must be F32 or BF16 rows [..., W], got {}", describe(x));
  const int64_t width = x.size(-1);
  SSM_CHECK(!z.defined() || is_gpu_rows(z, x.dtype(), x.shape()),
            "gated_rmsnorm: z must be rows of x's shape and dtype ({}), got {}", describe(x), describe(z));
  SSM_CHECK(is_gpu_vector(w, width), "gated_rmsnorm: w must be F32 [{}], got {}", width, describe(w));
  SSM_CHECK(group_size > 0 && width % group_size == 0,
            "gated_rmsnorm: group_size {} does not divide the width {} of x {}", group_size, width,
            shape_str(x.shape()));
  SSM_CHECK(is_gpu_rows(y, x.dtype(), x.shape()), "gated_rmsnorm: y must be rows of x's shape and dtype ({}), got {}",
            describe(x), describe(y));
  const Gate gate = !z.defined() ? Gate::None : norm_before_gate ? Gate::AfterNorm : Gate::BeforeNorm;
  run_norm("gated_rmsnorm", x, z, w, group_size, gate, eps, y);
}

}  // namespace ssm::ops::cuda
