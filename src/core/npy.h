// NumPy .npy files (format 1.0-3.0, little-endian, C order): int32, int64, float32.
#pragma once
#include <string>

#include "core/tensor.h"

namespace ssm {

// Throws ssm::Error naming the file for a bad magic, header, dtype, Fortran order or size.
Tensor read_npy(const std::string& path);
// Writes I32, I64 or F32 atomically (temporary file, then rename).
void write_npy(const std::string& path, const Tensor& tensor);

}  // namespace ssm
