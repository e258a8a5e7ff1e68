#include "core/side_stream.h"

#include "core/error.h"

#ifdef SSM_CUDA
#include "core/cuda/runtime.h"
#endif

namespace ssm {

#ifdef SSM_CUDA
struct DeviceEvent::Impl {
  cuda::Event event;
};
struct SideStream::Impl {
  cuda::SideStream stream;
};
#else
struct DeviceEvent::Impl {};
struct SideStream::Impl {};
#endif

DeviceEvent::DeviceEvent(Device device) {
  require_device(device);
  if (device == Device::CUDA) impl_ = std::make_unique<Impl>();
}
DeviceEvent::~DeviceEvent() = default;

void DeviceEvent::record() {
#ifdef SSM_CUDA
  if (impl_) impl_->event.record();
#endif
}

void DeviceEvent::wait() const {
#ifdef SSM_CUDA
  if (impl_) impl_->event.wait();
#endif
}

SideStream::SideStream(Device device) {
  require_device(device);
  if (device == Device::CUDA) impl_ = std::make_unique<Impl>();
}
SideStream::~SideStream() = default;

void SideStream::queue(const std::function<void()>& work, DeviceEvent& done) {
#ifdef SSM_CUDA
  if (impl_) {
    SSM_CHECK(done.impl_, "SideStream::queue: the event is not on the GPU");
    impl_->stream.queue(work, done.impl_->event);
    return;
  }
#endif
  work();
}

}  // namespace ssm
