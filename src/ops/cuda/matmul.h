// The GPU's general matrix product (cuBLASLt, in linear.cu): one handle, workspace and algorithm cache
// shared by ops::linear, its backward and the fused head + loss.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace ssm::ops::cuda {

// A row-major matrix in GPU memory: element (r, c) at data[r * ld + c].
struct Matrix {
  void* data;
  DType dtype;
  int64_t rows, cols, ld;
};

// A rows tensor [..., W] as the matrix [rows(), W] (its row stride as ld).
Matrix matrix_of(const Tensor& rows_tensor);

// Rows [first, first + count) of m.
inline Matrix row_range(const Matrix& m, int64_t first, int64_t count) {
  return {static_cast<char*>(m.data) + first * m.ld * int64_t(dtype_size(m.dtype)), m.dtype, count, m.cols, m.ld};
}

// c = op(a) · op(b) + beta · c, with op(a) = aᵀ when transpose_a (likewise b), F32 arithmetic.
// a and b share a dtype (F32: exact F32 products, or BF16); c is F32 or that dtype. With beta = 0, c
// is not read (NaN there does not matter); an empty sum (k = 0) gives beta · c, for beta 0 or 1.
// Shapes must agree (checked); `what` names the caller in errors. Queued on the current stream; the
// same shapes and alignments get the same algorithm every time, so results are bit-reproducible.
void matmul(const Matrix& a, bool transpose_a, const Matrix& b, bool transpose_b, const Matrix& c, float beta,
            const char* what);

}  // namespace ssm::ops::cuda
