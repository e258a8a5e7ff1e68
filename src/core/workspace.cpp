#include "core/workspace.h"

#include <algorithm>
#include <cstring>

#include "core/device.h"

namespace ssm {

namespace {
constexpr size_t kAlign = 64;
constexpr size_t kMinSpill = size_t(64) << 10;  // spill blocks hold at least this (few tiny blocks)
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Workspace Workspace::staging_for(Device device) {
  Workspace ws(Device::CPU);
  ws.staging_for_ = device;
  return ws;
}

std::shared_ptr<Storage> Workspace::allocate(size_t bytes) const {
  return device_ == Device::CPU ? allocate_staging(bytes, staging_for_) : Storage::allocate(bytes, device_);
}

size_t Workspace::capacity() const {
  return blocks_.empty() ? 0 : blocks_.back().begin + blocks_.back().storage->bytes();
}

Tensor Workspace::take(const Shape& shape, DType dtype) {
  for (int64_t extent : shape) SSM_CHECK(extent >= 0, "negative extent in shape {}", shape_str(shape));
  const size_t bytes = align_up(std::max<size_t>(1, size_t(shape_numel(shape)) * dtype_size(dtype)));
  // The first block, from the one holding used_ on, with room for [max(used_, begin), +bytes); a
  // tensor never straddles two blocks.
  const size_t taken_bytes = (taken_.empty() ? 0 : taken_.back().bytes) + bytes;
  high_water_ = std::max(high_water_, taken_bytes);
  for (const Block& block : blocks_) {
    const size_t start = std::max(used_, block.begin), end = block.begin + block.storage->bytes();
    if (start + bytes <= end) {
      used_ = start + bytes;
      taken_.push_back({used_, taken_bytes});
      return Tensor::wrap(block.storage, start - block.begin, shape, dtype);
    }
  }
  // Spill: a new block starting at the current end of the address space; the gap left at the end of
  // the previous block counts as used so that offsets stay monotonic.
  const size_t start = std::max(used_, capacity());
  const size_t block_bytes = std::max(bytes, kMinSpill);
  blocks_.push_back({allocate(block_bytes), start});
  ++block_allocations_;
  used_ = start + bytes;
  taken_.push_back({used_, taken_bytes});
  return Tensor::wrap(blocks_.back().storage, 0, shape, dtype);
}

Tensor Workspace::zeros(const Shape& shape, DType dtype) {
  Tensor t = take(shape, dtype);
  zero_bytes(t.raw(), device_, t.nbytes());
  return t;
}

void Workspace::release(Mark mark) {
  SSM_CHECK(mark <= used_, "Workspace::release: mark {} is above the bytes in use ({})", mark, used_);
  used_ = mark;
  while (!taken_.empty() && taken_.back().end > mark) taken_.pop_back();
  // Back at the bottom after a call that spilled: plan one block for the high-water mark.
  if (used_ == 0 && blocks_.size() > 1) {
    blocks_.clear();
    // The GPU's pool would keep the spill blocks' memory beside the new block: it goes back first.
    release_free_device_memory(device_);
    blocks_.push_back({allocate(high_water_), 0});
    ++block_allocations_;
    // Touch every page of host memory now: the calls this block is planned for take no page faults.
    if (device_ == Device::CPU) std::memset(blocks_.back().storage->data(), 0, high_water_);
    high_water_ = 0;  // from here on: the peak of the calls the plan serves
  }
}

}  // namespace ssm
