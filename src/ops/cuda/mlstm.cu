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

#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/mlstm_launch.h"

namespace ssm::ops::cuda {

namespace mlstm_launch {

void forward(const char* op, const MlstmInputs& in, MlstmState* state, Tensor& h, float* token_dots, float* token_ms) {
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
    const Args<T> a = args_of<T>(in, d, h, token_dots, token_ms);
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

}  // namespace mlstm_launch

using namespace mlstm_launch;

void mlstm(const MlstmInputs& in, MlstmState* state, Tensor& h) { forward("mlstm", in, state, h, nullptr, nullptr); }

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
