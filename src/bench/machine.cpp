#include "bench/machine.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "core/tensor.h"

namespace ssm::bench {

namespace {
using Clock = std::chrono::steady_clock;

template <class Fn>
double best_seconds(int repeats, Fn fn) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return best;
}
}  // namespace

MachineCeilings measure_machine() {
  MachineCeilings c;
  const int64_t n = int64_t(1) << 27;  // 512 MiB of floats: far beyond the caches
  Tensor a = Tensor::empty({n}), b = Tensor::empty({n});
  float* pa = a.data<float>();
  float* pb = b.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] = float(i & 7);

  volatile float sink = 0;
  const double read_s = best_seconds(3, [&] {
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
      // Each thread streams its own contiguous range into 16 independent sums (vectorises).
      const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t begin = n * id / threads / 16 * 16, end = n * (id + 1) / threads / 16 * 16;
      float lanes[16] = {};
      for (int64_t i = begin; i < end; i += 16)
        for (int j = 0; j < 16; ++j) lanes[j] += pa[i + j];
      for (float lane : lanes) total += lane;
    }
    sink = sink + total;
  });
  c.read_gbs = double(n) * 4 / read_s / 1e9;

  const double copy_s = best_seconds(3, [&] {
#pragma omp parallel
    {
      const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t begin = n * id / threads, end = n * (id + 1) / threads;
      std::memcpy(pb + begin, pa + begin, size_t(end - begin) * 4);
    }
  });
  c.copy_gbs = double(n) * 8 / copy_s / 1e9;

  const int m = 1536;
  Tensor x = Tensor::zeros({m, m}), w = Tensor::zeros({m, m}), y = Tensor::zeros({m, m});
  const double gemm_s = best_seconds(3, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, m, 1.0f, x.data<float>(), m, w.data<float>(), m, 0.0f,
                y.data<float>(), m);
  });
  c.sgemm_gflops = 2.0 * m * m * m / gemm_s / 1e9;
  return c;
}

}  // namespace ssm::bench
