// Small values the host computes for a layer (positions, lengths) placed where the layer's tensors
// live: written in place on the CPU, staged through a host buffer for the GPU.
#pragma once
#include "core/tensor.h"
#include "core/workspace.h"

namespace ssm {

// An I32 tensor of `shape` from ws whose elements fill(int32_t*) writes.
template <class Fill>
Tensor host_filled_i32(Workspace& ws, const Shape& shape, Fill fill) {
  Tensor out = ws.take(shape, DType::I32);
  if (out.device() == Device::CPU) {
    fill(out.data<int32_t>());
    return out;
  }
  Tensor host = Tensor::empty(shape, DType::I32);
  fill(host.data<int32_t>());
  out.copy_from(host);
  return out;
}

// The dtype a layer computes its activations in: F32 on the CPU (whatever the weights), the weights'
// dtype on the GPU.
inline DType activation_dtype(const Tensor& weight) {
  return weight.device() == Device::CPU ? DType::F32 : weight.dtype();
}

}  // namespace ssm
