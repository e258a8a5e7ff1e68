#include "core/graph.h"

#include "core/error.h"

#ifdef SSM_CUDA
#include "core/cuda/runtime.h"
#endif

namespace ssm {

#ifdef SSM_CUDA
struct DeviceGraph::Impl {
  cuda::Graph graph;
};
#else
struct DeviceGraph::Impl {};
#endif

DeviceGraph::DeviceGraph() : impl_(std::make_unique<Impl>()) {}
DeviceGraph::~DeviceGraph() = default;

bool DeviceGraph::record(const std::function<void()>& work) {
#ifdef SSM_CUDA
  return impl_->graph.record(work);
#else
  return false;
#endif
}

bool DeviceGraph::recorded() const {
#ifdef SSM_CUDA
  return impl_->graph.recorded();
#else
  return false;
#endif
}

void DeviceGraph::replay() {
#ifdef SSM_CUDA
  impl_->graph.replay();
#else
  fail("DeviceGraph::replay: this build has no CUDA backend");
#endif
}

void DeviceGraph::clear() {
#ifdef SSM_CUDA
  impl_->graph.clear();
#endif
}

}  // namespace ssm
