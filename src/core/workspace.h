// Workspace: the memory activations and scratch come from, so that a forward, a decode step or a
// training step allocates nothing once it has run at a shape. Tensors are carved from one block by
// a bump pointer with stack discipline (mark / release); a call that outgrows the block spills into
// extra blocks of the size it asks for (no more: the first call's footprint is its high-water mark,
// not a doubled capacity), and the next release to the bottom replaces them all by one block of the
// high-water size, so the memory is planned by the first call at each shape and reused by every
// later one. The high-water mark counts the bytes of the tensors alive at once, not the spill
// blocks' address space: a call that releases in its middle (a layer's temporaries) leaves spill
// blocks too small or too low for what it takes next, and those gaps are no part of the plan.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace ssm {

class Workspace {
 public:
  using Mark = size_t;  // bytes in use

  explicit Workspace(Device device = Device::CPU) : device_(device) {}
  // A workspace on the host for what is copied to and from `device` (ids up, logits down): its blocks
  // are page-locked when that is the GPU (allocate_staging).
  static Workspace staging_for(Device device);
  Device device() const { return device_; }

  // An uninitialised tensor valid until the workspace is released below it. Blocks stay alive while
  // a tensor refers to them, so a tensor outliving its release is never dangling (only reused).
  Tensor take(const Shape& shape, DType dtype = DType::F32);
  Tensor zeros(const Shape& shape, DType dtype = DType::F32);

  Mark mark() const { return used_; }
  void release(Mark mark);
  void reset() { release(0); }

  size_t capacity() const;     // bytes of the planned block
  // The most bytes taken at once since the last plan (the replacement of spill blocks by one block).
  size_t high_water() const { return high_water_; }
  int64_t block_allocations() const { return block_allocations_; }  // blocks ever allocated (growth count)

 private:
  struct Block {
    std::shared_ptr<Storage> storage;
    size_t begin;  // offset of this block's first byte in the workspace's address space
  };
  std::shared_ptr<Storage> allocate(size_t bytes) const;

  Device device_;
  Device staging_for_ = Device::CPU;  // host blocks page-locked for copies to the GPU (staging_for)
  struct Taken {
    size_t end;    // address just past the tensor
    size_t bytes;  // bytes taken up to and including it (no gaps)
  };
  std::vector<Block> blocks_;
  std::vector<Taken> taken_;  // the live tensors, in the order taken (stack discipline)
  size_t used_ = 0, high_water_ = 0;
  int64_t block_allocations_ = 0;
};

// Releases the workspace back to where it was on construction (the temporaries of one scope).
class WorkspaceScope {
 public:
  explicit WorkspaceScope(Workspace& ws) : ws_(ws), mark_(ws.mark()) {}
  ~WorkspaceScope() { ws_.release(mark_); }
  WorkspaceScope(const WorkspaceScope&) = delete;
  WorkspaceScope& operator=(const WorkspaceScope&) = delete;

 private:
  Workspace& ws_;
  Workspace::Mark mark_;
};

}  // namespace ssm
