// The GPU backend of ops_backward.h: the same backward ops with the same signatures and contracts,
// for tensors on Device::CUDA. ops::<op>_backward (in ops/cpu/<op>_backward.cpp) hands a call whose
// tensors live on the GPU to ops::cuda::<op>_backward (in ops/cuda/<op>_backward.cu).
//
// GPU conventions on top of cuda_ops.h's:
//   - Activations, their gradients (dx, dy, ...) and the saved tensors a backward reads are F32 or
//     BF16, one dtype per call; parameter gradients (dw, dbias, dA, dD, ...) are F32 and accumulated.
//   - Deterministic: no float atomics whose order varies. Sums over rows (a parameter's gradient)
//     go through per-block partials added in a fixed order, so two runs give the same bits.
#pragma once
#include "ops/ops_backward.h"

namespace ssm::ops::cuda {

// ---- dense (linear_backward.cu, through linear.cu's cuBLASLt products) ----
// x, dy and dx share the activation dtype; w (read for dx only) has it too; dw and dbias are F32.
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* dbias,
                     bool accumulate_dx);
// ids I32 on the host (sorted there and uploaded) or on the GPU (sorted there); dout F32 or BF16 rows.
// Deterministic: every table row sums its positions' rows in position order. An id outside [0, V) in
// ids on the GPU adds nothing and is reported by ops::check_embedding_ids, as for the forward.
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable);

// ---- head + cross-entropy (cross_entropy.cu) ----
// hidden, weight and dhidden share the activation dtype; dweight F32. Targets I32 on the host or the
// GPU. The one op that waits for the GPU: it returns the loss (and `counted`), so it synchronises
// once at its end. With targets on the GPU the count of rows that count stays there (the gradient
// kernels read it), and a target outside the vocabulary is reported after that wait, when the
// outputs have been written.
double cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, Tensor* dhidden,
                     Tensor* dweight, const CrossEntropyOptions& options, int64_t* counted);

}  // namespace ssm::ops::cuda
