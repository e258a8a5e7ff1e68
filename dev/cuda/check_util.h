// What the kernel checks of dev/cuda/ share (the host checks and the GPU benchmarks): rounding to the
// dtype under test, normal random inputs, the relative error against a double reference, and the
// one-line report of a case's errors.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

// v as the dtype T holds it (BF16 rounds; F32 keeps it).
template <class T>
float round_to(float v) {
  if constexpr (sizeof(T) == 2) return __bfloat162float(__float2bfloat16(v));
  return v;
}

// Fills v with n values offset + scale * N(0, 1) from gen; activations rounded to the dtype T.
template <class T>
struct NormalFill {
  std::mt19937& gen;
  std::normal_distribution<float> normal{0.0f, 1.0f};
  void operator()(std::vector<float>& v, size_t n, float scale, float offset, bool activation) {
    v.resize(n);
    for (float& e : v) e = activation ? round_to<T>(offset + scale * normal(gen)) : offset + scale * normal(gen);
  }
};

// max |got - want| / max |want| over want's elements, got read through `at`; NaN gives infinity.
template <class F>
double rel_error(const std::vector<double>& want, F&& at) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = at(i);
    if (std::isnan(g)) return INFINITY;
    diff = std::max(diff, std::fabs(g - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return diff / std::max(scale, 1e-30);
}
inline double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  return rel_error(want, [&got](size_t i) { return double(got[i]); });
}
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  return rel_error(got, std::vector<double>(want.begin(), want.end()));
}

// Readers of a kernel's outputs for rel_error: element i of a [rows, width] block starting at column
// `at` of rows `row_width` wide, and element i of a vector.
template <class E>
auto column_reader(const std::vector<E>& rows, int row_width, int at, int width) {
  return [&rows, row_width, at, width](size_t i) {
    return double(float(rows[(i / width) * row_width + at + i % width]));
  };
}
inline auto vector_reader(const std::vector<float>& v) {
  return [&v](size_t i) { return double(v[i]); };
}

// Rows [t0, t0 + count) of each of `batch` sequences of `tokens` rows `width` wide, as E: a call's tokens out of the
// whole inputs, or the reference's outputs for them.
template <class E, class V>
std::vector<E> sequence_rows(const std::vector<V>& all, int batch, int tokens, int t0, int count, int width) {
  std::vector<E> out(size_t(batch) * count * width);
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < count; ++t)
      for (int c = 0; c < width; ++c)
        out[(size_t(b) * count + t) * width + c] = E(all[(size_t(b) * tokens + t0 + t) * width + c]);
  return out;
}

// Appends " name error" to report; below tol or else "(FAIL)" appended and ok cleared.
inline void report_error(std::string& report, bool& ok, const char* name, double error, double tol) {
  char text[48];
  std::snprintf(text, sizeof text, " %s %.1e", name, error);
  report += text;
  if (!(error < tol)) {
    ok = false;
    report += "(FAIL)";
  }
}

// Σ w · y, the loss whose gradient a backward host check's finite differences take.
inline double weighted_sum(const std::vector<float>& w, const std::vector<double>& y) {
  double sum = 0.0;
  for (size_t i = 0; i < y.size(); ++i) sum += double(w[i]) * y[i];
  return sum;
}

// dL/dv for every element of `values` by central differences, each step relative_step · max(1, |v|); loss() reads
// `values` (changed one element at a time and restored).
template <class Loss>
std::vector<double> central_differences(std::vector<double>& values, Loss&& loss, double relative_step) {
  std::vector<double> grad(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double kept = values[i], step = relative_step * std::max(1.0, std::fabs(kept));
    values[i] = kept + step;
    const double up = loss();
    values[i] = kept - step;
    const double down = loss();
    values[i] = kept;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

// Runs each case in F32 (seed) and BF16 (seed + 1), the seed advancing by 2 a case; prints the verdict and returns
// the program's exit status.
template <class Case, class RunF32, class RunBf16>
int run_cases(const std::vector<Case>& cases, RunF32&& run_f32, RunBf16&& run_bf16) {
  bool ok = true;
  unsigned seed = 1;
  for (const Case& k : cases) {
    ok &= run_f32(k, seed);
    ok &= run_bf16(k, seed + 1);
    seed += 2;
  }
  std::printf("%s\n", ok ? "all cases passed" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
