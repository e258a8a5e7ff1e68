// The side stream on the GPU (core/side_stream.h): its work starts after what the current stream
// queued before queue(), the current stream's work after DeviceEvent::wait sees what it wrote, the
// current stream is the caller's again afterwards (also when the work throws), and a graph
// recording refuses it.
#include <gtest/gtest.h>

#include <cmath>

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "core/graph.h"
#include "core/side_stream.h"
#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm {
namespace {

TEST(SideStreamGpu, OrdersItsWorkAfterTheCurrentStreamsAndBefore) {
  gpu_test::require_gpu();
  // 64M elements: each pass over x takes ~0.1 ms, long enough for unordered work to overlap it.
  const int64_t rows = 4096, cols = 16384, doublings = 6;
  Tensor x = Tensor::empty({rows, cols}, DType::F32, Device::CUDA);
  Tensor y = Tensor::empty({rows, cols}, DType::BF16, Device::CUDA);
  SideStream side(Device::CUDA);
  DeviceEvent done(Device::CUDA);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    ops::fill(y, std::nanf(""));
    ops::fill(x, float(round + 1));
    for (int64_t d = 0; d < doublings; ++d) ops::add_inplace(x, x);
    void* caller = cuda::current_stream();
    side.queue(
        [&] {
          EXPECT_NE(cuda::current_stream(), caller) << "the work is queued on the caller's stream";
          ops::convert(x, y);
        },
        done);
    EXPECT_EQ(cuda::current_stream(), caller);
    done.wait();
    const Tensor host = y.to_device(Device::CPU).to(DType::F32);  // waits for the current stream only
    const float expected = float(round + 1) * float(1 << doublings);
    int64_t wrong = 0;
    for (int64_t i = 0; i < host.numel(); ++i) wrong += host.data<float>()[i] != expected;
    EXPECT_EQ(wrong, 0) << "elements of " << host.numel() << " not " << expected
                        << " (NaN: read before the side stream wrote them; less: converted before x was final)";
  }
}

TEST(SideStreamGpu, GivesTheCurrentStreamBackWhenTheWorkThrows) {
  gpu_test::require_gpu();
  SideStream side(Device::CUDA);
  DeviceEvent done(Device::CUDA);
  void* caller = cuda::current_stream();
  EXPECT_THROW(side.queue([] { fail("thrown inside the side stream's work"); }, done), Error);
  EXPECT_EQ(cuda::current_stream(), caller);
}

TEST(SideStreamGpu, IsRefusedInsideAGraphRecording) {
  gpu_test::require_gpu();
  Tensor x = Tensor::zeros({4, 8}, DType::F32, Device::CUDA);
  SideStream side(Device::CUDA);
  DeviceEvent done(Device::CUDA);
  void* caller = cuda::current_stream();
  DeviceGraph graph;
  bool queued = false;
  EXPECT_FALSE(graph.record([&] {
    ops::fill(x, 1.0f);
    side.queue([&] { queued = true; }, done);
  }));
  EXPECT_FALSE(queued);
  EXPECT_EQ(cuda::current_stream(), caller);
  // The stream is usable after the refused recording.
  ops::fill(x, 2.0f);
  EXPECT_EQ(x.to_device(Device::CPU).data<float>()[31], 2.0f);
}

}  // namespace
}  // namespace ssm
