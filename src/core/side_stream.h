// Device work that overlaps the current stream's: a second stream, and events that order the two
// streams' work where one reads what the other writes. On the CPU work runs when it is queued, in
// order, so there is nothing to order: queue() runs it at once and the events do nothing.
#pragma once
#include <functional>
#include <memory>

#include "core/device.h"

namespace ssm {

// A point in the work queued on a device stream that the current stream's later work can wait for.
class DeviceEvent {
 public:
  explicit DeviceEvent(Device device);
  ~DeviceEvent();
  DeviceEvent(const DeviceEvent&) = delete;
  DeviceEvent& operator=(const DeviceEvent&) = delete;
  void record();      // marks the work queued on the current stream so far
  void wait() const;  // the current stream's later work waits for what was marked (nothing if never recorded)

 private:
  friend class SideStream;
  struct Impl;
  std::unique_ptr<Impl> impl_;  // null on the CPU
};

class SideStream {
 public:
  explicit SideStream(Device device);
  ~SideStream();  // waits for its queued work
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;
  // Queues what `work` queues on the current stream on this stream instead, to start after everything
  // queued on the current stream so far, then records `done` there: the current stream's work that
  // reads what `work` writes waits for `done` first. Not while recording a graph (DeviceGraph).
  void queue(const std::function<void()>& work, DeviceEvent& done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;  // null on the CPU
};

}  // namespace ssm
