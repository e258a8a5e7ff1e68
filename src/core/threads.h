// The thread count shared by our OpenMP loops and OpenBLAS.
#pragma once

namespace ssm {
void set_num_threads(int count);  // count <= 0 keeps the default (all cores)
int num_threads();
}  // namespace ssm
