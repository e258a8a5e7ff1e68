// Deterministic sums over rows on the GPU: the second step of a parameter gradient summed over many
// rows (tokens). A backward kernel writes one partial sum per block (or per thread's tile of rows)
// into a scratch [n_parts, width] buffer; add_column_sums adds its column sums into the gradient,
// always in the same order, so two runs give the same bits (no float atomics).
#pragma once
#include <cstdint>

namespace ssm::ops::cuda {

// out[c] += Σ_{p < n_parts} parts[p · ld + c] for c < width; all pointers to F32 on the GPU, queued
// on the current stream. `op` names the caller in a launch error.
void add_column_sums(const float* parts, int64_t n_parts, int64_t ld, int64_t width, float* out, const char* op);

}  // namespace ssm::ops::cuda
