// Ceilings of the machine a benchmark runs on, measured in the same run: memory bandwidth and the
// f32 matrix-product rate (OpenBLAS sgemm).
#pragma once

namespace ssm::bench {

struct MachineCeilings {
  double read_gbs = 0;    // GB/s streaming reads (a decode step reads its weights once)
  double copy_gbs = 0;    // GB/s of a memcpy, bytes read + written counted
  double sgemm_gflops = 0;
};

// Uses the current thread count (ssm::set_num_threads).
MachineCeilings measure_machine();

}  // namespace ssm::bench
