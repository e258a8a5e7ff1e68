#include "nn/mixers/conv_ssm_state.h"

#include <algorithm>
#include <cstring>

#include "ops/ops.h"

namespace ssm {

Tensor decode_A(const Tensor& A_log) {
  if (!A_log.defined()) return Tensor();
  Tensor a = Tensor::empty(A_log.shape(), DType::F32, A_log.device());
  ops::neg_exp(A_log, a);
  return a;
}

ByteCopy batch_row_copy(const Tensor& from, int64_t from_index, const Tensor& to, int64_t to_index) {
  SSM_CHECK(from.is_contiguous() && to.is_contiguous() && from.dtype() == to.dtype() && from.dim() == to.dim(),
            "copy_batch_row: states {} and {} do not match", shape_str(from.shape()), shape_str(to.shape()));
  SSM_CHECK(from_index >= 0 && from_index < from.size(0) && to_index >= 0 && to_index < to.size(0),
            "copy_batch_row: row {} of {} into row {} of {}", from_index, from.size(0), to_index, to.size(0));
  const size_t row = from.nbytes() / size_t(from.size(0));
  SSM_CHECK(row == to.nbytes() / size_t(to.size(0)), "copy_batch_row: row sizes differ");
  return {static_cast<char*>(to.raw()) + size_t(to_index) * row,
          static_cast<const char*>(from.raw()) + size_t(from_index) * row, row};
}

void copy_batch_row(const Tensor& from, int64_t from_index, const Tensor& to, int64_t to_index) {
  const ByteCopy copy = batch_row_copy(from, from_index, to, to_index);
  copy_bytes(copy.dst, to.device(), copy.src, from.device(), copy.bytes);
}

void resize_batch_rows(Tensor& storage, Tensor& rows, int64_t batch) {
  SSM_CHECK(batch >= 0, "resize_batch_rows: batch {}", batch);
  if (batch > storage.size(0)) {
    Shape shape = storage.shape();
    shape[0] = std::max(batch, 2 * shape[0]);
    Tensor grown = Tensor::zeros(shape, storage.dtype(), storage.device());
    const int64_t kept = std::min(rows.size(0), batch);
    grown.slice(0, 0, kept).copy_from(rows.slice(0, 0, kept));
    storage = std::move(grown);
  }
  rows = storage.slice(0, 0, batch);
}

void MixerState::resize(int64_t) {
  fail("this recurrent state cannot change its number of sequences in place (see resizable())");
}

Tensor host_copy(const Tensor& t) {
  return t.device() == Device::CPU ? t.contiguous().clone() : t.to_device(Device::CPU);
}

const Tensor& state_tensor(const StateTensorMap& tensors, const std::string& name, const Shape& shape, DType dtype,
                           const char* owner) {
  const auto it = tensors.find(name);
  SSM_CHECK(it != tensors.end(), "{}: the state has no tensor '{}'", owner, name);
  SSM_CHECK(it->second.shape() == shape && it->second.dtype() == dtype, "{}: '{}' is {} {}, this mixer's is {} {}",
            owner, name, dtype_name(it->second.dtype()), shape_str(it->second.shape()), dtype_name(dtype),
            shape_str(shape));
  return it->second;
}

Tensor export_row(const Tensor& batch, int64_t index) { return host_copy(batch.select(0, index)); }

void import_row(const StateTensorMap& tensors, const std::string& name, const Tensor& batch, int64_t index,
                const char* owner) {
  Tensor row = batch.select(0, index);
  row.copy_from(state_tensor(tensors, name, row.shape(), row.dtype(), owner));
}

StateTensors ConvSsmState::export_sequence(int64_t index) const {
  return {{"conv", export_row(conv, index)}, {"ssm", export_row(ssm, index)}};
}

void ConvSsmState::import_sequence(int64_t index, const StateTensorMap& tensors) {
  import_row(tensors, "conv", conv, index, "ConvSsmState");
  import_row(tensors, "ssm", ssm, index, "ConvSsmState");
}

void ConvSsmState::resize(int64_t batch) {
  resize_batch_rows(conv_storage_, conv, batch);
  resize_batch_rows(ssm_storage_, ssm, batch);
}

std::unique_ptr<MixerState> ConvSsmState::unset_like(int64_t batch) const {
  Shape conv_shape = conv.shape(), ssm_shape = ssm.shape();
  conv_shape[0] = ssm_shape[0] = batch;
  return std::make_unique<ConvSsmState>(Tensor::empty(conv_shape, DType::F32, conv.device()),
                                        Tensor::empty(ssm_shape, DType::F32, ssm.device()), A);
}

void ConvSsmState::copy_sequence(int64_t from, MixerState& to, int64_t to_index) const {
  auto& target = state_as<ConvSsmState>(&to, "ConvSsmState::copy_sequence");
  copy_batch_row(conv, from, target.conv, to_index);
  copy_batch_row(ssm, from, target.ssm, to_index);
}

bool ConvSsmState::sequence_copies(int64_t from, MixerState& to, int64_t to_index,
                                   std::vector<ByteCopy>& copies) const {
  auto& target = state_as<ConvSsmState>(&to, "ConvSsmState::copy_sequence");
  copies.push_back(batch_row_copy(conv, from, target.conv, to_index));
  copies.push_back(batch_row_copy(ssm, from, target.ssm, to_index));
  return true;
}

}  // namespace ssm
