// What a mixer's training face needs from the trainer: where its parameter gradients go, and where
// its time is booked when a step is profiled.
#pragma once
#include <chrono>

#include "core/device.h"
#include "core/tensor.h"
#include "core/workspace.h"

namespace ssm {

// The gradient tensor of each parameter (F32, same shape), found by the parameter's identity.
class Gradients {
 public:
  virtual ~Gradients() = default;
  virtual Tensor& of(const Tensor& param) = 0;
  // The gradient of an optional parameter (a bias), or null when the parameter is absent.
  Tensor* of_optional(const Tensor& param) { return param.defined() ? &of(param) : nullptr; }
};

// Where the time of a training step goes (seconds, accumulated while a pointer is given).
struct StepProfile {
  double matmul = 0;  // projections, the head + loss (forward and backward)
  double mixing = 0;  // the sequence-mixing cores: selective scan, SSD, attention, RAT (forward and backward)
  double conv = 0;    // depthwise conv1d (forward and backward)
  double other = 0;   // norms, embedding, residuals, gates, routing
  Device device = Device::CPU;  // on the GPU each timed piece waits for its kernels (profiling runs only)
  double total() const { return matmul + mixing + conv + other; }
};

// Adds the time from construction to destruction into one slot of a profile (when profiling).
class Timed {
 public:
  Timed(StepProfile* profile, double StepProfile::*slot) : profile_(profile), slot_(slot) {
    if (!profile_) return;
    synchronize(profile_->device);
    start_ = Clock::now();
  }
  ~Timed() {
    if (!profile_) return;
    synchronize(profile_->device);
    profile_->*slot_ += std::chrono::duration<double>(Clock::now() - start_).count();
  }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  using Clock = std::chrono::steady_clock;
  StepProfile* profile_;
  double StepProfile::*slot_;
  Clock::time_point start_;
};

// The training face of one mixer: a forward that keeps what its backward needs, and that backward.
// Saved activations are taken from the workspace in forward and stay there until the trainer
// releases the workspace below them, after backward.
class MixerTraining {
 public:
  virtual ~MixerTraining() = default;
  // x [B,T,D] → y [B,T,D]. x holds the same values again when backward runs (the trainer keeps it, or
  // recomputes it in place); y is read before the next forward and not kept.
  virtual void forward(const Tensor& x, Tensor& y, Workspace& ws, StepProfile* prof) = 0;
  // dy → dx (written); parameter gradients accumulated into grads.
  virtual void backward(const Tensor& dy, Tensor& dx, Gradients& grads, Workspace& ws, StepProfile* prof) = 0;

  // Set before forward: keep less and recompute cheap activations in backward, to the same bits
  // (TrainPassOptions::recompute). Mixers with nothing cheap to recompute ignore it.
  bool recompute = false;
};

}  // namespace ssm
