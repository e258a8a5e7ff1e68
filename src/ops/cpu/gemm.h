// The matrix products of the CPU kernels, and the one place that decides which library runs them
// (gemm.cpp, `choose`), once per process from the CPU's features:
//   - f32 products: OpenBLAS, with its core type corrected on AVX-512 CPUs (Debian's 0.3.21 runs
//     Haswell's AVX2 kernels on AVX-512 CPUs it does not know, such as AMD Zen 4);
//   - many-row products with 16-bit weights: oneDNN's bf16 matmul where it runs on AMX tiles;
//     elsewhere (ops::linear) the weights are widened to f32 for sgemm.
// docs/performance.md ("Matrix-product libraries") has the measurements behind the rules.
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace ssm::ops::gemm {

// c[M,N] = beta c + op(a) · op(b), row-major, op(t) = tᵀ when trans_*; a is [M,K] (or [K,M]
// transposed), b is [K,N] (or [N,K]). Inside an OpenMP parallel region it runs on the calling
// thread only.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
           int64_t ldb, float beta, float* c, int64_t ldc);

// Whether bf16_gemm runs here (a bf16 matrix product faster than widening the weights for sgemm).
bool has_bf16_gemm();
// y[M,N] = beta y + x[M,K] · w[N,K]ᵀ with w in bf16 (row stride K): x is rounded to bf16 once per
// call, products are summed in f32. Requires has_bf16_gemm().
void bf16_gemm(const float* x, int64_t ldx, const uint16_t* w, int64_t M, int64_t N, int64_t K, float beta, float* y,
               int64_t ldy);

// y[M,N] (+)= x[M,K] · w[N,K]ᵀ, x and w bf16 (row strides K), through oneDNN's matmul on whatever
// instruction set it finds (bf16_gemm's engine; exposed for the measurement tool).
void bf16_matmul(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K, bool accumulate, float* y,
                 int64_t ldy);

// From how many rows of x ops::linear hands a product with weights of dtype `w` to a GEMM (below:
// its streaming kernel, which reads each weight once per 8 rows).
int64_t linear_min_rows(DType w);
// Whether ops::linear with weights of dtype `w` and M rows of x goes through bf16_gemm, which rounds
// x to bf16 (what the tests compare it with).
bool linear_rounds_x_to_bf16(DType w, int64_t M);

// One line naming the libraries chosen and why, for `ssm inspect` and the benchmarks.
std::string describe_choice();

// out[r, c] = bf16(x[r, c]) (round to nearest even) for a rows x cols block.
void to_bf16(const float* x, int64_t ldx, int64_t rows, int64_t cols, uint16_t* out, int64_t ld_out);

}  // namespace ssm::ops::gemm
