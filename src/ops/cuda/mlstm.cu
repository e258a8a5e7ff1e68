// ops::mlstm and ops::mlstm_step on the GPU (xLSTM's matrix memory; the equations are in ops.h and ops/cpu/mlstm.cpp).
// q, k and v in the activation dtype; the gates, h, the state and all arithmetic F32 (cuda_ops.h says why).
//
// The forward runs in chunks of at most kMaxChunk tokens, the CPU's chunkwise form split in two kernels:
//   - chunk_states_kernel: a block per (sequence, head, 64 x 64 tile of C) walks the chunks in order, writing each
//     chunk's starting state (its tile of C; n and m where the tile owns them) and then advancing it:
//     C' = e^{g+m−m'} C + Σ_s e^{a_s−m'} k_s v_sᵀ. Every block of a head computes the gates' scalars itself, with the
//     same arithmetic, so they agree to the bit.
//   - chunk_outputs_kernel: a block per (sequence, head, chunk, 64 columns of h) forms the chunk's scores q̂_t·k_s and
//     its starting state's share q̂_tᵀC over dk in slabs of 32, weighs the scores by their decays, and adds their
//     product with v.
// The chunk states take B·H·chunks·dk·dv floats, so a long sequence runs as segments of at most kSegmentChunks chunks
// whose states fit kStateBudget bytes, the state carried from one to the next.
//
// The step: step_rows_kernel, a block per (sequence, head, 32 rows of C), updates its rows of C and n and sums its
// rows' share of q̂ᵀC and q̂·n; step_finish_kernel adds the shares in order, divides and writes m, which every block of
// the first kernel has read.
#include <algorithm>
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/mlstm_kernels.cuh"
#include "ops/cuda/op_checks.h"

namespace ssm::ops::cuda {

namespace {

using namespace mlstm_kernels;

struct Dims {
  int64_t B, T, H, dk, dv;
};

// Checks the inputs ([B,T,·] rows or [B,·] for a step: q, k, v in one activation dtype, i, f F32), h (F32) and the
// state.
Dims check(const char* op, const MlstmInputs& in, const MlstmState* state, const Tensor& h, bool step) {
  check_on_gpu(op, {&in.q, &in.k, &in.v, &in.i, &in.f, &h});
  const DType dtype = in.q.dtype();
  const int64_t dims = step ? 2 : 3;
  SSM_CHECK(in.n_heads > 0, "{}: n_heads must be positive, got {}", op, in.n_heads);
  SSM_CHECK(is_activation_dtype(dtype) && is_gpu_rows(in.q, dtype) && in.q.dim() == dims,
            "{}: q must be F32 or BF16 rows of {} dims, got {}", op, dims, describe(in.q));
  Dims d{in.q.size(0), step ? 1 : in.q.size(1), in.n_heads, 0, 0};
  SSM_CHECK(in.q.size(-1) % d.H == 0 && in.v.dim() == dims && in.v.size(-1) % d.H == 0,
            "{}: q's width {} and v's {} must be multiples of {} heads", op, in.q.size(-1), in.v.size(-1), d.H);
  d.dk = in.q.size(-1) / d.H;
  d.dv = in.v.size(-1) / d.H;
  const auto rows = [&](int64_t width) { return step ? Shape{d.B, width} : Shape{d.B, d.T, width}; };
  SSM_CHECK(is_gpu_rows(in.k, dtype, in.q.shape()) && is_gpu_rows(in.v, dtype, rows(d.H * d.dv)),
            "{}: k {} and v {} must be rows of q's dtype {}, got {} and {}", op, shape_str(in.q.shape()),
            shape_str(rows(d.H * d.dv)), dtype_name(dtype), describe(in.k), describe(in.v));
  SSM_CHECK(is_gpu_rows(in.i, DType::F32, rows(d.H)) && is_gpu_rows(in.f, DType::F32, rows(d.H)) &&
                is_gpu_rows(h, DType::F32, rows(d.H * d.dv)),
            "{}: i and f {} and h {} must be F32 rows, got {}, {} and {}", op, shape_str(rows(d.H)),
            shape_str(rows(d.H * d.dv)), describe(in.i), describe(in.f), describe(h));
  SSM_CHECK(d.dk > 0 && d.dv > 0, "{}: empty heads (dk {}, dv {})", op, d.dk, d.dv);
  SSM_CHECK(in.chunk_size > 0, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  SSM_CHECK(std::isfinite(in.eps) && in.eps >= 0, "{}: eps must not be negative, got {}", op, in.eps);
  if (state) {
    const auto on_gpu = [](const Tensor& t, const Shape& shape) {
      return t.defined() && t.device() == Device::CUDA && t.dtype() == DType::F32 && t.shape() == shape &&
             t.is_contiguous();
    };
    SSM_CHECK(
        on_gpu(state->C, {d.B, d.H, d.dk, d.dv}) && on_gpu(state->n, {d.B, d.H, d.dk}) && on_gpu(state->m, {d.B, d.H}),
        "{}: the state must be contiguous F32 on the GPU, C [{}, {}, {}, {}], n [{}, {}, {}], m [{}, {}], got {}, {} "
        "and {}",
        op, d.B, d.H, d.dk, d.dv, d.B, d.H, d.dk, d.B, d.H, describe(state->C), describe(state->n), describe(state->m));
  }
  return d;
}

template <class T>
Args<T> args_of(const MlstmInputs& in, const Dims& d, Tensor& h) {
  return {rows_of<const T>(in.q),
          rows_of<const T>(in.k),
          rows_of<const T>(in.v),
          rows_of<const float>(in.i),
          rows_of<const float>(in.f),
          rows_of<float>(h),
          d.T,
          d.H,
          d.dk,
          d.dv,
          in.eps,
          1.0f / std::sqrt(float(d.dk))};
}

State state_of(MlstmState& s) { return {s.C.data<float>(), s.n.data<float>(), s.m.data<float>()}; }

}  // namespace

void mlstm(const MlstmInputs& in, MlstmState* state, Tensor& h) {
  const char* op = "mlstm";
  const Dims d = check(op, in, state, h, false);
  if (d.B == 0 || d.T == 0) return;
  MlstmState own;
  if (!state) {
    own = MlstmState::zeros(d.B, d.H, d.dk, d.dv, Device::CUDA);
    state = &own;
  }
  const Plan p = plan_of(d.B, d.H, d.T, d.dk, d.dv, in.chunk_size);
  Tensor Cs = Tensor::empty({d.B * d.H, p.per_segment, d.dk, d.dv}, DType::F32, Device::CUDA);
  Tensor ns = Tensor::empty({d.B * d.H, p.per_segment, d.dk}, DType::F32, Device::CUDA);
  Tensor ms = Tensor::empty({d.B * d.H, p.per_segment + 1}, DType::F32, Device::CUDA);
  with_activation_type(in.q.dtype(), op, [&]<class T>() {
    const Args<T> a = args_of<T>(in, d, h);
    for (int64_t first = 0; first < p.chunks; first += p.per_segment) {
      const int count = int(std::min(p.per_segment, p.chunks - first));
      const ChunkStates out{Cs.data<float>(), ns.data<float>(), ms.data<float>(), count};
      const int64_t t_begin = first * p.L;
      chunk_states_kernel<T><<<dim3(unsigned(p.row_tiles * p.col_tiles), unsigned(d.B * d.H)), kThreads, 0, stream()>>>(
          a, state_of(*state), out, t_begin, p.L, p.col_tiles);
      SSM_CUDA_CHECK_LAUNCH("{}: chunk states of B {} T {} heads {} dk {} dv {}", op, d.B, d.T, d.H, d.dk, d.dv);
      chunk_outputs_kernel<T>
          <<<dim3(unsigned(p.col_tiles), unsigned(count), unsigned(d.B * d.H)), kThreads, 0, stream()>>>(
              a, out, state->m.data<float>(), t_begin, p.L);
      SSM_CUDA_CHECK_LAUNCH("{}: chunk outputs of B {} T {} heads {} dk {} dv {}", op, d.B, d.T, d.H, d.dk, d.dv);
    }
  });
}

void mlstm_step(const MlstmInputs& in, MlstmState& state, Tensor& h) {
  const char* op = "mlstm_step";
  const Dims d = check(op, in, &state, h, true);
  if (d.B == 0) return;
  const int64_t splits = (d.dk + kStepRows - 1) / kStepRows;
  Tensor partial_h = Tensor::empty({d.B * d.H * splits, d.dv}, DType::F32, Device::CUDA);
  Tensor partial_dot = Tensor::empty({d.B * d.H * splits}, DType::F32, Device::CUDA);
  with_activation_type(in.q.dtype(), op, [&]<class T>() {
    const Args<T> a = args_of<T>(in, d, h);
    step_rows_kernel<T><<<dim3(unsigned(splits), unsigned(d.B * d.H)), kStepThreads, 0, stream()>>>(
        a, state_of(state), partial_h.data<float>(), partial_dot.data<float>());
    SSM_CUDA_CHECK_LAUNCH("{}: rows of B {} heads {} dk {} dv {}", op, d.B, d.H, d.dk, d.dv);
    step_finish_kernel<T><<<unsigned(d.B * d.H), kStepThreads, 0, stream()>>>(
        a, state.m.data<float>(), partial_h.data<float>(), partial_dot.data<float>(), int(splits));
    SSM_CUDA_CHECK_LAUNCH("{}: outputs of B {} heads {} dk {} dv {}", op, d.B, d.H, d.dk, d.dv);
  });
}

}  // namespace ssm::ops::cuda
