// Tensor: shape, strides (in elements), dtype, device and shared storage. Views share storage
// without copying. No autograd: backward passes are written per layer.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace ssm {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);
// The bytes of a tensor of `shape` read from a file: nullopt for a negative extent, or when the
// element count or the byte count does not fit in int64 (a file's shape must not wrap to a small size).
std::optional<int64_t> checked_nbytes(const Shape& shape, DType dtype);
// `shape` with its last extent replaced by `width` (the output shape of a row-wise map).
Shape with_last(Shape shape, int64_t width);

// A block of bytes with its release function (aligned free, munmap, cudaFree, ...).
class Storage {
 public:
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  static std::shared_ptr<Storage> allocate(size_t bytes, Device device = Device::CPU);

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> release_;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  // Wraps memory owned elsewhere; `storage` keeps it alive.
  static Tensor wrap(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t axis) const;  // negative axis counts from the end
  int64_t stride(int64_t axis) const;
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::CPU; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  // Last dim contiguous and every leading dim laid out as rows of one stride: what row-wise ops need.
  bool has_uniform_rows() const;
  int64_t row_stride() const;  // elements between consecutive rows (requires has_uniform_rows)
  int64_t rows() const;  // product of all dims but the last

  void* raw() const;
  template <class T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Views (no copy).
  Tensor view(const Shape& shape) const;                               // requires contiguous
  Tensor slice(int64_t axis, int64_t start, int64_t length) const;     // along one axis
  Tensor select(int64_t axis, int64_t index) const;                    // drops the axis
  Tensor contiguous() const;                                           // copy if needed
  Tensor to(DType dtype) const;                                        // converting copy
  Tensor clone() const;
  // A contiguous copy on `device` (the same tensor when it is already there and contiguous).
  Tensor to_device(Device device) const;
  void copy_from(const Tensor& source);  // same shape; converts dtype on the CPU; across devices: same dtype
  void fill(float value);

 private:
  std::shared_ptr<Storage> storage_;
  size_t byte_offset_ = 0;
  Shape shape_, strides_;
  DType dtype_ = DType::F32;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace ssm
