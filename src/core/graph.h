// A recorded sequence of GPU work replayed as one launch (a CUDA graph): decoding records the
// model's one-token step once per batch size and replays it for every token, so the step costs one
// launch instead of hundreds. The recorded work must read its inputs from, and write its outputs to,
// the same device addresses at every replay.
#pragma once
#include <functional>
#include <memory>

namespace ssm {

class DeviceGraph {
 public:
  DeviceGraph();
  ~DeviceGraph();
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;

  // Records what `work` queues on the current stream (nothing runs). False when the work cannot be
  // recorded (it synchronised, or copied from host memory): the caller runs it directly instead.
  bool record(const std::function<void()>& work);
  bool recorded() const;
  void replay();  // queues the recorded work on the current stream
  void clear();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm
