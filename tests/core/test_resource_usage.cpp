// The process counters the benchmark reports: a page fault counter that does count (so that a
// zero elsewhere means something) and resident memory that follows what is touched.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/resource_usage.h"

namespace ssm {
namespace {

TEST(ResourceUsage, TouchingFreshMemoryCountsPageFaults) {
  const size_t bytes = size_t(64) << 20;
  void* block = std::aligned_alloc(4096, bytes);  // far above malloc's mmap threshold: fresh pages
  ASSERT_NE(block, nullptr);
  const int64_t before = minor_page_faults();
  volatile char* pages = static_cast<volatile char*>(block);  // volatile: the stores are not optimised away
  for (size_t i = 0; i < bytes; i += 4096) pages[i] = 1;
  const int64_t after = minor_page_faults();
  const int64_t resident = resident_bytes();
  std::free(block);
  EXPECT_GT(after, before);
  EXPECT_GE(resident, int64_t(bytes));
  EXPECT_GE(peak_resident_bytes(), int64_t(bytes));  // not `resident`: the kernel syncs the peak lazily
}

}  // namespace
}  // namespace ssm
