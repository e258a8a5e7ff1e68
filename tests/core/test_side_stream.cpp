// The side stream on the CPU (core/side_stream.h): there is one order of work, so queue() runs the
// work at once and the events have nothing to wait for.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/side_stream.h"

namespace ssm {
namespace {

TEST(SideStream, RunsTheWorkAtOnceOnTheCpu) {
  SideStream side(Device::CPU);
  DeviceEvent done(Device::CPU);
  int runs = 0;
  side.queue([&] { ++runs; }, done);
  EXPECT_EQ(runs, 1);
  done.wait();
  done.record();
  EXPECT_THROW(side.queue([] { fail("thrown by the work"); }, done), Error);
}

}  // namespace
}  // namespace ssm
