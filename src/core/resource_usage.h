// What the process has used so far, as the kernel counts it. A minor page fault is the first touch
// of a page of memory: in a hot path that runs at a planned shape, each one is an allocation that
// should not be there.
#pragma once
#include <cstdint>

namespace ssm {

int64_t minor_page_faults();  // since the process started, all threads (getrusage ru_minflt)
double resident_bytes();      // resident set now (/proc/self/statm)
double peak_resident_bytes();  // largest resident set so far (getrusage ru_maxrss)

}  // namespace ssm
