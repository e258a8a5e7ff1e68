#include "core/threads.h"

#include <omp.h>

#include "core/error.h"

extern "C" void openblas_set_num_threads(int);

namespace ssm {

void set_num_threads(int count) {
  if (count <= 0) return;
  omp_set_num_threads(count);
  openblas_set_num_threads(count);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace ssm
