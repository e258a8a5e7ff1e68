// Runs a block of a test with a given OpenMP / OpenBLAS thread count (ctest runs the suite with
// OMP_NUM_THREADS=1, which would leave the kernels' parallel paths untested), restoring the count after.
#pragma once
#include "core/threads.h"

namespace ssm::test {

class ScopedThreads {
 public:
  explicit ScopedThreads(int count) : previous_(num_threads()) { set_num_threads(count); }
  ~ScopedThreads() { set_num_threads(previous_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_;
};

}  // namespace ssm::test
