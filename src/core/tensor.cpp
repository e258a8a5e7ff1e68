#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

namespace ssm {

std::string shape_str(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t extent : shape) n *= extent;
  return n;
}

std::optional<int64_t> checked_nbytes(const Shape& shape, DType dtype) {
  // The product of the non-zero extents must fit as well: an empty tensor's strides are made of them.
  int64_t n = int64_t(dtype_size(dtype));
  bool empty = false;
  for (int64_t extent : shape) {
    if (extent < 0 || (extent > 0 && __builtin_mul_overflow(n, extent, &n))) return std::nullopt;
    empty = empty || extent == 0;
  }
  return empty ? 0 : n;
}

Shape with_last(Shape shape, int64_t width) {
  SSM_CHECK(!shape.empty(), "with_last: a shape without dims");
  shape.back() = width;
  return shape;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

Storage::Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release)
    : data_(data), bytes_(bytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (release_) release_(data_);
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) { return allocate_storage(bytes, device); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t extent : shape) SSM_CHECK(extent >= 0, "negative extent in shape {}", shape_str(shape));
  return wrap(Storage::allocate(size_t(shape_numel(shape)) * dtype_size(dtype), device), 0, shape, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  zero_bytes(t.raw(), device, t.nbytes());
  return t;
}

Tensor Tensor::to_device(Device device) const {
  if (device == this->device() && is_contiguous()) return *this;
  const Tensor source = contiguous();
  Tensor out = empty(shape_, dtype_, device);
  copy_bytes(out.raw(), device, source.raw(), source.device(), nbytes());
  return out;
}

Tensor Tensor::wrap(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype) {
  Tensor t;
  t.storage_ = std::move(storage);
  t.byte_offset_ = byte_offset;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

int64_t Tensor::size(int64_t axis) const {
  if (axis < 0) axis += dim();
  SSM_CHECK(axis >= 0 && axis < dim(), "axis {} out of range for shape {}", axis, shape_str(shape_));
  return shape_[size_t(axis)];
}

int64_t Tensor::stride(int64_t axis) const {
  if (axis < 0) axis += dim();
  SSM_CHECK(axis >= 0 && axis < dim(), "axis {} out of range for shape {}", axis, shape_str(shape_));
  return strides_[size_t(axis)];
}

int64_t Tensor::rows() const {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape_.size(); ++i) n *= shape_[i];
  return n;
}

bool Tensor::is_contiguous() const {
  const Shape expected = contiguous_strides(shape_);
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (shape_[i] != 1 && strides_[i] != expected[i]) return false;
  }
  return true;
}

bool Tensor::has_uniform_rows() const {
  if (dim() <= 1) return dim() == 0 || strides_.back() == 1 || shape_.back() <= 1;
  if (strides_.back() != 1 && shape_.back() > 1) return false;
  for (size_t i = 0; i + 2 < shape_.size(); ++i) {
    if (shape_[i] > 1 && strides_[i] != shape_[i + 1] * strides_[i + 1]) return false;
  }
  return true;
}

int64_t Tensor::row_stride() const {
  SSM_CHECK(has_uniform_rows(), "tensor of shape {} has no uniform row layout", shape_str(shape_));
  return dim() >= 2 ? strides_[shape_.size() - 2] : size(-1);
}

void* Tensor::raw() const {
  SSM_CHECK(storage_ != nullptr, "use of an undefined tensor");
  return static_cast<char*>(storage_->data()) + byte_offset_;
}

Tensor Tensor::view(const Shape& shape) const {
  SSM_CHECK(is_contiguous(), "view of a non-contiguous tensor {}", shape_str(shape_));
  SSM_CHECK(shape_numel(shape) == numel(), "cannot view {} as {}", shape_str(shape_), shape_str(shape));
  return wrap(storage_, byte_offset_, shape, dtype_);
}

Tensor Tensor::slice(int64_t axis, int64_t start, int64_t length) const {
  if (axis < 0) axis += dim();
  SSM_CHECK(axis >= 0 && axis < dim() && start >= 0 && length >= 0 && start + length <= shape_[size_t(axis)],
            "slice [{}, {}) of axis {} out of range for shape {}", start, start + length, axis, shape_str(shape_));
  Tensor t = *this;
  t.shape_[size_t(axis)] = length;
  t.byte_offset_ += size_t(start * strides_[size_t(axis)]) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::select(int64_t axis, int64_t index) const {
  if (axis < 0) axis += dim();
  Tensor t = slice(axis, index, 1);
  t.shape_.erase(t.shape_.begin() + axis);
  t.strides_.erase(t.strides_.begin() + axis);
  return t;
}

namespace {
float load_as_f32(const char* p, DType dtype) {
  switch (dtype) {
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::BF16: { uint16_t v; std::memcpy(&v, p, 2); return bf16_to_f32(v); }
    case DType::F16: { uint16_t v; std::memcpy(&v, p, 2); return f16_to_f32(v); }
    case DType::I32: { int32_t v; std::memcpy(&v, p, 4); return float(v); }
    case DType::I64: { int64_t v; std::memcpy(&v, p, 8); return float(v); }
    case DType::I8: return float(*reinterpret_cast<const int8_t*>(p));
  }
  return 0;
}

void store_from_f32(char* p, DType dtype, float value) {
  switch (dtype) {
    case DType::F32: std::memcpy(p, &value, 4); break;
    case DType::BF16: { uint16_t v = f32_to_bf16(value); std::memcpy(p, &v, 2); break; }
    case DType::F16: { uint16_t v = f32_to_f16(value); std::memcpy(p, &v, 2); break; }
    case DType::I32: { int32_t v = int32_t(value); std::memcpy(p, &v, 4); break; }
    case DType::I64: { int64_t v = int64_t(value); std::memcpy(p, &v, 8); break; }
    case DType::I8: *reinterpret_cast<int8_t*>(p) = int8_t(value); break;
  }
}

bool is_integer(DType dtype) { return dtype == DType::I32 || dtype == DType::I64 || dtype == DType::I8; }

int64_t load_as_i64(const char* p, DType dtype) {
  switch (dtype) {
    case DType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::I64: { int64_t v; std::memcpy(&v, p, 8); return v; }
    case DType::I8: return *reinterpret_cast<const int8_t*>(p);
    default: return int64_t(load_as_f32(p, dtype));
  }
}

void store_from_i64(char* p, DType dtype, int64_t value) {
  switch (dtype) {
    case DType::I32: { int32_t v = int32_t(value); std::memcpy(p, &v, 4); break; }
    case DType::I64: std::memcpy(p, &value, 8); break;
    case DType::I8: *reinterpret_cast<int8_t*>(p) = int8_t(value); break;
    default: store_from_f32(p, dtype, float(value));
  }
}

// Calls fn(source_element_offset, dest_element_index) over every element in row-major order.
template <class Fn>
void for_each_offset(const Shape& shape, const Shape& strides, Fn fn) {
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> index(shape.size(), 0);
  int64_t offset = 0;
  for (int64_t i = 0; i < n; ++i) {
    fn(offset, i);
    for (size_t axis = shape.size(); axis-- > 0;) {
      if (++index[axis] < shape[axis]) {
        offset += strides[axis];
        break;
      }
      offset -= strides[axis] * (shape[axis] - 1);
      index[axis] = 0;
    }
  }
}
}  // namespace

void Tensor::copy_from(const Tensor& source) {
  SSM_CHECK(source.shape_ == shape_, "copy from shape {} into shape {}", shape_str(source.shape_), shape_str(shape_));
  const bool across_devices = device() != Device::CPU || source.device() != Device::CPU;
  if (across_devices && is_contiguous() && source.is_contiguous()) {
    SSM_CHECK(source.dtype_ == dtype_, "a copy to or from the GPU keeps the dtype ({} into {})",
              dtype_name(source.dtype_), dtype_name(dtype_));
    copy_bytes(raw(), device(), source.raw(), source.device(), nbytes());
    return;
  }
  if (!is_contiguous() || across_devices) {
    // A strided destination or source (a slice of a cache, a column slice): blocks of rows between
    // tensors of one dtype whose last dims are contiguous, one 2-D copy per index of the dims before
    // the last two.
    SSM_CHECK(source.dtype_ == dtype_ && (dim() == 0 || ((strides_.back() == 1 || shape_.back() <= 1) &&
                                                          (source.strides_.back() == 1 || shape_.back() <= 1))),
              "a strided copy needs one dtype and contiguous rows on both sides ({} into {})",
              dtype_name(source.dtype_), dtype_name(dtype_));
    if (numel() == 0) return;
    const size_t element = dtype_size(dtype_), row_bytes = size_t(shape_.back()) * element;
    const size_t rows = dim() >= 2 ? size_t(shape_[shape_.size() - 2]) : 1;
    const size_t dest_pitch = dim() >= 2 ? size_t(strides_[shape_.size() - 2]) * element : row_bytes;
    const size_t src_pitch = dim() >= 2 ? size_t(source.strides_[shape_.size() - 2]) * element : row_bytes;
    const Shape outer(shape_.begin(), shape_.end() - std::min<int64_t>(dim(), 2));
    Shape dest_strides(strides_.begin(), strides_.begin() + int64_t(outer.size()));
    Shape src_strides(source.strides_.begin(), source.strides_.begin() + int64_t(outer.size()));
    // Walk the outer index once, accumulating both offsets.
    std::vector<int64_t> index(outer.size(), 0);
    int64_t dest_offset = 0, src_offset = 0;
    for (int64_t r = 0, n = shape_numel(outer); r < n; ++r) {
      copy_rows(static_cast<char*>(raw()) + size_t(dest_offset) * element, dest_pitch, device(),
                static_cast<const char*>(source.raw()) + size_t(src_offset) * element, src_pitch, source.device(),
                row_bytes, rows);
      for (size_t axis = outer.size(); axis-- > 0;) {
        if (++index[axis] < outer[axis]) {
          dest_offset += dest_strides[axis];
          src_offset += src_strides[axis];
          break;
        }
        dest_offset -= dest_strides[axis] * (outer[axis] - 1);
        src_offset -= src_strides[axis] * (outer[axis] - 1);
        index[axis] = 0;
      }
    }
    return;
  }
  char* dest = static_cast<char*>(raw());
  const char* src = static_cast<const char*>(source.raw());
  const size_t src_size = dtype_size(source.dtype_), dest_size = dtype_size(dtype_);
  if (source.dtype_ == dtype_ && source.is_contiguous()) {
    if (nbytes()) std::memcpy(dest, src, nbytes());  // an empty tensor's pointers may be null
    return;
  }
  const bool same_type = source.dtype_ == dtype_;
  const bool integers = is_integer(source.dtype_) && is_integer(dtype_);  // exact, not through float
  for_each_offset(shape_, source.strides_, [&](int64_t offset, int64_t i) {
    if (same_type) {
      std::memcpy(dest + i * dest_size, src + offset * src_size, dest_size);
    } else if (integers) {
      store_from_i64(dest + i * dest_size, dtype_, load_as_i64(src + offset * src_size, source.dtype_));
    } else {
      store_from_f32(dest + i * dest_size, dtype_, load_as_f32(src + offset * src_size, source.dtype_));
    }
  });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  // Conversions run on the host (loading, tests); a GPU tensor goes there and back.
  if (device() != Device::CPU) return to_device(Device::CPU).to(dtype).to_device(device());
  Tensor out = empty(shape_, dtype);
  out.copy_from(*this);
  return out;
}

void Tensor::fill(float value) {
  SSM_CHECK(is_contiguous() && device() == Device::CPU, "fill of a non-contiguous or GPU tensor");
  char* p = static_cast<char*>(raw());
  const size_t element = dtype_size(dtype_);
  for (int64_t i = 0; i < numel(); ++i) store_from_f32(p + i * element, dtype_, value);
}

}  // namespace ssm
