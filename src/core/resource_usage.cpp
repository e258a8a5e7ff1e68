#include "core/resource_usage.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

namespace ssm {

namespace {
rusage usage_now() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage;
}
}  // namespace

int64_t minor_page_faults() { return int64_t(usage_now().ru_minflt); }

double resident_bytes() {
  long total_pages = 0, resident_pages = 0;
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (!statm) return 0;
  const bool read = std::fscanf(statm, "%ld %ld", &total_pages, &resident_pages) == 2;
  std::fclose(statm);
  return read ? double(resident_pages) * double(sysconf(_SC_PAGESIZE)) : 0;
}

double peak_resident_bytes() { return double(usage_now().ru_maxrss) * 1024.0; }

}  // namespace ssm
