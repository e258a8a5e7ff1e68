// What the process has used so far, as the kernel counts it. A minor page fault is the first touch
// of a page of memory: in a hot path that runs at a planned shape, each one is an allocation that
// should not be there.
#pragma once
#include <cstdint>

namespace ssm {

int64_t minor_page_faults();  // since the process started, all threads (getrusage ru_minflt)
int64_t resident_bytes();     // resident set now (/proc/self/statm), or 0 where unknown
double cpu_seconds();         // user and system CPU time since the process started, all threads (getrusage)
// The peak resident memory of this process's own address space (VmHWM in /proc/self/status; unlike
// getrusage's maxrss it does not inherit the parent's across exec), or 0 where unknown.
int64_t peak_resident_bytes();

}  // namespace ssm
