// RAT (Wei et al. 2025, "RAT: Bridging RNN Efficiency and Attention Accuracy"), as the authors'
// layer computes it (CLAIRE-Labo/RAT src/model/backbone/rat/rat.py, class RAT):
//   [z, v, g, q, k] = in_proj(x)          widths D, D, D, G·dh, G·dh (D = H·dh), no bias
//   y = out_proj(σ(z) ⊙ rat(q, k, v, g))  no bias
// where rat is ops::rat (a gated recurrence inside chunks of L tokens, forget gate σ(g + gate_bias),
// softmax attention over the earlier chunks' ends; equations at the top of ops/cpu/rat.cpp). Their
// layer's input RMSNorm and residual are the model's residual branch. Its state is the chunk-end
// keys/values seen so far plus the running pair of the current chunk (ops::RatCache).
#pragma once
#include <set>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct RatSettings final : MixerSettings {
  int64_t d_model = 0, n_heads = 0, head_dim = 0;
  int64_t n_groups = 2;     // q/k groups G; head h reads group h mod G
  int64_t chunk_size = 16;  // L
  double rope_theta = 10000.0;

  // The project's own section keys:
  //   num_heads   H (default hidden_size / head_dim)
  //   head_dim    dh, even (default hidden_size / num_heads, or 64 when num_heads is absent);
  //               H · dh must equal hidden_size, as in the authors' layer
  //   qk_groups   G, dividing H (default 2, as in the paper)
  //   chunk_size  L (default 16, the paper's 1.3B models)
  //   rope_theta  base of the rotation across chunks (default 10000)
  static RatSettings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();

  int64_t width() const { return n_heads * head_dim; }  // D
  int64_t qk_width() const { return n_groups * head_dim; }
  int64_t in_proj_width() const { return 3 * width() + 2 * qk_width(); }
  std::string_view kind() const override { return "rat"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

// ops::RatCache for a batch of sequences, each at its own position.
class RatState final : public MixerState {
 public:
  // The cache lives on `device` (the layer's weights').
  RatState(int64_t batch, int64_t width, int64_t chunk_size, Device device = Device::CPU);
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  // Room for the chunks finished by `length` tokens (the running chunk lives in cache.key/value).
  void reserve(int64_t length) override { cache.reserve(length / chunk_size); }
  int64_t bytes() const override;
  StateTensors export_sequence(int64_t index) const override;  // tokens, the running pair, finished chunks
  void import_sequence(int64_t index, const StateTensorMap& tensors) override;

  ops::RatCache cache;
  int64_t chunk_size;
};

class RatMixer final : public Mixer {
 public:
  explicit RatMixer(const RatSettings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  std::unique_ptr<MixerState> new_state(int64_t batch) const override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  std::unique_ptr<MixerTraining> training() const override;
  double matmul_macs_per_token() const override;
  // A key and a value of width D per finished chunk of L tokens.
  double cache_bytes_per_token() const override {
    return 2.0 * double(s.width()) * sizeof(float) / double(s.chunk_size);
  }

  const RatSettings s;
  Linear in_proj, out_proj;
  Tensor gate_bias;  // [D]

  // Column ranges of in_proj's output, in the authors' split order z, v, g, q, k.
  int64_t z_offset() const { return 0; }
  int64_t v_offset() const { return s.width(); }
  int64_t g_offset() const { return 2 * s.width(); }
  int64_t q_offset() const { return 3 * s.width(); }
  int64_t k_offset() const { return 3 * s.width() + s.qk_width(); }
  // ops::rat's inputs as column slices of in_proj's output (rows [.., in_proj_width]).
  ops::RatInputs rat_inputs(const Tensor& projected) const;
  // The z columns of in_proj's output.
  Tensor z_of(const Tensor& projected) const;
};

}  // namespace ssm
