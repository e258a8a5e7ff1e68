// ops::mamba3, ops::mamba3_step and MIMO's projections on the GPU (the equations are in ops.h, the kernels in
// mamba3_kernels.cuh). x, B, C and the raw dt, A, trap and angles in the activation dtype, like in_proj's
// output they are columns of; the state and all arithmetic F32.
#include <algorithm>
#include <mutex>

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/mamba3_launch.h"

namespace ssm::ops::cuda {

namespace {

using namespace mamba3_kernels;
using mamba3_launch::args_of;
using mamba3_launch::check;
using mamba3_launch::Dims;
using mamba3_launch::threads_of;

constexpr int64_t kMinChunk = 64;  // tokens a chunk has at least

// The chunks: as many as fill the GPU's `resident` walk blocks, each at least kMinChunk tokens (one chunk when the
// (sequence, head, rows) blocks alone fill it).
void chunk(const Dims& d, int64_t resident, Layout& lay) {
  const int64_t blocks = d.B * d.H * ((d.P + lay.rows - 1) / lay.rows);
  const int64_t wanted = (resident + blocks - 1) / blocks;
  const int64_t chunks = std::clamp<int64_t>(std::min(wanted, d.T / kMinChunk), 1, 1024);
  lay.chunk_len = int((d.T + chunks - 1) / chunks);
  lay.chunks = int((d.T + lay.chunk_len - 1) / lay.chunk_len);
}

void run(const char* op, const Mamba3Inputs& in, Mamba3State* state, Tensor& y, bool step) {
  const Dims d = check(op, in, state, y, step);
  if (d.B == 0 || d.T == 0) return;
  Layout lay = threads_of(d);
  const int64_t row_blocks = (d.P + lay.rows - 1) / lay.rows, PN = d.P * d.N;
  const size_t shared_bytes = Staged::floats(int(d.R), int(d.N), lay.rows, int(d.S)) * sizeof(float);
  SSM_CHECK(shared_bytes <= shared_memory_per_block(),
            "{}: {} ranks of d_state {} need {} bytes of shared memory a block, more than the GPU's {}", op, d.R, d.N,
            shared_bytes, shared_memory_per_block());
  // The runtime calls below are not stream work: made once a kernel (the shared-memory limit) or only for sequences
  // long enough to chunk, they stay out of a decode step's recorded graph (a step runs once before it is recorded).
  int per_multiprocessor = 1;
  with_activation_type(in.x.dtype(), op, [&]<class T>() {
    static std::once_flag allowed;
    std::call_once(allowed, [op] {
      for (auto* kernel : {&walk_kernel<T, false>, &walk_kernel<T, true>})
        SSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            int(shared_memory_per_block())),
                       "{}: allowing the GPU's shared memory", op);
    });
    if (d.T >= 2 * kMinChunk)
      SSM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, walk_kernel<T, true>,
                                                                   lay.threads, shared_bytes),
                     "{}: the walk's occupancy at {} threads and {} bytes of shared memory", op, lay.threads,
                     shared_bytes);
  });
  chunk(d, int64_t(std::max(per_multiprocessor, 1)) * multiprocessor_count(), lay);

  State st{};
  Tensor start_copy;  // the state's angle, k and x, when other blocks read them while the last chunk rewrites them
  if (state) {
    st = {state->angle.data<float>(), state->ssm.data<float>(), state->k.data<float>(), state->x.data<float>(),
          state->angle.data<float>(), state->ssm.data<float>(), state->k.data<float>(), state->x.data<float>()};
    if (lay.chunks > 1 || row_blocks > 1) {
      const int64_t sizes[3] = {state->angle.numel(), state->k.numel(), state->x.numel()};
      start_copy = Tensor::empty({sizes[0] + sizes[1] + sizes[2]}, DType::F32, Device::CUDA);
      float* to = start_copy.data<float>();
      const float* from[3] = {st.angle, st.k, st.x};
      const float** starts[3] = {&st.angle0, &st.k0, &st.x0};
      for (int i = 0; i < 3; ++i) {
        SSM_CUDA_CHECK(cudaMemcpyAsync(to, from[i], size_t(sizes[i]) * sizeof(float), cudaMemcpyDeviceToDevice, stream()),
                       "{}: copying the starting state", op);
        *starts[i] = to;
        to += sizes[i];
      }
    }
  }
  Tensor summaries, decays, angle_sums;
  if (lay.chunks > 1) {
    summaries = Tensor::empty({d.B * d.H, lay.chunks, d.P, d.N}, DType::F32, Device::CUDA);
    decays = Tensor::empty({d.B * d.H, lay.chunks}, DType::F32, Device::CUDA);
    angle_sums = Tensor::empty({d.B * d.H, lay.chunks, d.S}, DType::F32, Device::CUDA);
    lay.summaries = summaries.data<float>();
    lay.decays = decays.data<float>();
    lay.angle_sums = angle_sums.data<float>();
  }
  with_activation_type(in.x.dtype(), op, [&]<class T>() {
    const Args<T> a = args_of<T>(in, d, y);
    const dim3 grid(unsigned(row_blocks), unsigned(lay.chunks), unsigned(d.B * d.H));
    if (lay.chunks > 1) {
      angle_sums_kernel<T><<<dim3(unsigned(lay.chunks), unsigned(d.B * d.H)), unsigned((d.S + 31) / 32 * 32), 0,
                             stream()>>>(a, lay);
      SSM_CUDA_CHECK_LAUNCH("{}: angle sums of B {} T {} heads {} in {} chunks", op, d.B, d.T, d.H, lay.chunks);
      walk_kernel<T, false><<<grid, unsigned(lay.threads), shared_bytes, stream()>>>(a, st, lay);
      SSM_CUDA_CHECK_LAUNCH("{}: chunk summaries of B {} T {} heads {} P {} N {} rank {}", op, d.B, d.T, d.H, d.P, d.N,
                            d.R);
      carry_kernel<T><<<dim3(blocks_for(PN, 256), unsigned(d.B * d.H)), 256, 0, stream()>>>(a, st, lay);
      SSM_CUDA_CHECK_LAUNCH("{}: chunk starts of B {} heads {} in {} chunks", op, d.B, d.H, lay.chunks);
    }
    walk_kernel<T, true><<<grid, unsigned(lay.threads), shared_bytes, stream()>>>(a, st, lay);
    SSM_CUDA_CHECK_LAUNCH("{}: outputs of B {} T {} heads {} P {} N {} rank {}", op, d.B, d.T, d.H, d.P, d.N, d.R);
  });
}

struct MimoDims {
  int64_t rows, H, R, P;
};

MimoDims check_mimo(const char* op, const Tensor& narrow, const Tensor& w, const Tensor& wide) {
  check_on_gpu(op, {&narrow, &w, &wide});
  SSM_CHECK(w.dtype() == DType::F32 && w.dim() == 3 && w.is_contiguous(), "{}: w must be contiguous F32 [H, R, P], got {}",
            op, describe(w));
  const MimoDims d{0, w.size(0), w.size(1), w.size(2)};
  SSM_CHECK(is_activation_dtype(narrow.dtype()) && is_gpu_rows(narrow, narrow.dtype()) && narrow.size(-1) == d.H * d.P,
            "{}: the narrow tensor must be F32 or BF16 rows [..., {}] (H·P of w {}), got {}", op, d.H * d.P,
            describe(w), describe(narrow));
  Shape wide_shape = narrow.shape();
  wide_shape.back() = d.R * d.H * d.P;
  SSM_CHECK(is_gpu_rows(wide, narrow.dtype(), wide_shape), "{}: the wide tensor must be rows {} of {}, got {}", op,
            shape_str(wide_shape), dtype_name(narrow.dtype()), describe(wide));
  return {narrow.numel() / narrow.size(-1), d.H, d.R, d.P};
}

}  // namespace

void mamba3(const Mamba3Inputs& in, Mamba3State* state, Tensor& y) { run("mamba3", in, state, y, false); }

void mamba3_step(const Mamba3Inputs& in, Mamba3State& state, Tensor& y) { run("mamba3_step", in, &state, y, true); }

void mamba3_mimo_expand(const Tensor& narrow, const Tensor& w, Tensor& wide) {
  const char* op = "mamba3_mimo_expand";
  const MimoDims d = check_mimo(op, narrow, w, wide);
  if (d.rows == 0) return;
  with_activation_type(narrow.dtype(), op, [&]<class T>() {
    mimo_expand_kernel<T><<<blocks_for(d.rows * d.R * d.H * d.P, 256), 256, 0, stream()>>>(
        rows_of<const T>(narrow), w.data<float>(), rows_of<T>(wide), d.rows, int(d.H), int(d.R), int(d.P));
    SSM_CUDA_CHECK_LAUNCH("{} of {} rows, {} heads × {} ranks × {}", op, d.rows, d.H, d.R, d.P);
  });
}

void mamba3_mimo_contract(const Tensor& wide, const Tensor& w, Tensor& narrow) {
  const char* op = "mamba3_mimo_contract";
  const MimoDims d = check_mimo(op, narrow, w, wide);
  if (d.rows == 0) return;
  with_activation_type(narrow.dtype(), op, [&]<class T>() {
    mimo_contract_kernel<T><<<blocks_for(d.rows * d.H * d.P, 256), 256, 0, stream()>>>(
        rows_of<const T>(wide), w.data<float>(), rows_of<T>(narrow), d.rows, int(d.H), int(d.R), int(d.P));
    SSM_CUDA_CHECK_LAUNCH("{} of {} rows, {} heads × {} ranks × {}", op, d.rows, d.H, d.R, d.P);
  });
}

void mamba3_mimo_weight_grad(const Tensor& wide, const Tensor& narrow, Tensor& dw) {
  const char* op = "mamba3_mimo_weight_grad";
  const MimoDims d = check_mimo(op, narrow, dw, wide);
  if (d.rows == 0) return;
  with_activation_type(narrow.dtype(), op, [&]<class T>() {
    mimo_weight_grad_kernel<T><<<blocks_for(d.H * d.R * d.P, 128), 128, 0, stream()>>>(
        rows_of<const T>(wide), rows_of<const T>(narrow), dw.data<float>(), d.rows, int(d.H), int(d.R), int(d.P));
    SSM_CUDA_CHECK_LAUNCH("{} of {} rows, {} heads × {} ranks × {}", op, d.rows, d.H, d.R, d.P);
  });
}

}  // namespace ssm::ops::cuda
