// Softmax attention (the attention layers of Bamba, Jamba, Falcon-H1, Nemotron-H and of the
// project's own plans): q/k/v projections, RoPE (rotate-half, partial) or none, causal GQA
// attention with an optional sliding window, o_proj. Its state is a KV cache: keys (after RoPE) and
// values of every token seen, or of the last `window` tokens in a ring buffer.
#pragma once
#include <set>
#include <vector>

#include "core/config_reader.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "ops/ops.h"

namespace ssm {

struct AttentionSettings final : MixerSettings {
  int64_t d_model = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t rotary_dim = 0;  // channels of each head that RoPE rotates (0: no positional encoding)
  double rope_theta = 10000.0;
  int64_t window = 0;       // sliding window (0: every earlier token)
  bool qkv_bias = false, o_bias = false;
  float key_scale = 1.0f;   // Falcon-H1's key_multiplier, on k_proj's output
  float softmax_scale = 0;  // 0: 1/sqrt(head_dim)

  // The project's own section keys: num_attention_heads, num_key_value_heads, head_dim, rope_theta,
  // partial_rotary_factor, position_embedding ("rope" | "none"), sliding_window, attention_bias.
  static AttentionSettings from_config(const ConfigReader& r, int64_t d_model);
  static const std::set<std::string>& config_keys();
  // "swa": the same keys, sliding_window required.
  static AttentionSettings sliding_from_config(const ConfigReader& r, int64_t d_model);

  std::string_view kind() const override { return window > 0 ? "swa" : "attention"; }
  std::string describe() const override;
  std::unique_ptr<Mixer> build() const override;
  void validate(const std::string& source) const;
};

// Keys and values of every sequence: [B, capacity, n_kv_heads · head_dim] each, in the activation
// dtype on the model's device; row r of sequence b holds position r (full cache) or a position ≡ r
// mod window (sliding-window ring buffer). The host keeps the token counts; `lengths` mirrors them
// where attention_decode reads it.
class KvCache final : public MixerState {
 public:
  KvCache(int64_t batch, int64_t width, int64_t window, DType dtype, Device device);
  void copy_sequence(int64_t from, MixerState& to, int64_t to_index) const override;
  void reserve(int64_t length) override;
  int64_t bytes() const override { return int64_t(k.nbytes() + v.nbytes()); }
  StateTensors export_sequence(int64_t index) const override;  // seen, and k/v of the rows in use
  void import_sequence(int64_t index, const StateTensorMap& tensors) override;

  int64_t capacity() const { return k.size(1); }
  int64_t row_of(int64_t position) const { return window > 0 ? position % window : position; }
  // Rows that hold tokens of sequence b (the op's `lengths`).
  int64_t valid_rows(int64_t b) const;

  // Records that every sequence has seen `tokens` more and updates `lengths`.
  void advance(int64_t tokens);

  Tensor k, v;
  std::vector<int64_t> seen;  // tokens seen by each sequence
  Tensor lengths;             // I32 [B]: valid_rows of each sequence, as attention_decode reads it
  int64_t window;

 private:
  void grow(int64_t capacity);
  void upload_lengths();
};

class AttentionMixer final : public Mixer {
 public:
  explicit AttentionMixer(const AttentionSettings& settings);
  void add_params(const std::string& prefix, ParamList& params) override;
  void init_parameters(Rng& rng, const InitOptions& options) override;
  std::unique_ptr<MixerState> new_state(int64_t batch) const override;
  void forward(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  void step(const Tensor& x, MixerState* state, Tensor& y, Workspace& ws) const override;
  std::unique_ptr<MixerTraining> training() const override;
  double matmul_macs_per_token() const override;
  double cache_bytes_per_token() const override { return 2.0 * double(s.n_kv_heads * s.head_dim) * sizeof(float); }
  int64_t cache_limit_tokens() const override { return s.window; }

  const AttentionSettings s;
  Linear q_proj, k_proj, v_proj, o_proj;

  ops::AttentionParams params() const;
  ops::RopeParams rope() const;
  // q, k, v [.., H·d], [.., Hkv·d] of rows x, with the key multiplier and RoPE at `positions`
  // (I32 of x's leading shape) applied.
  void project(const Tensor& x, const Tensor& positions, Tensor& q, Tensor& k, Tensor& v) const;
};

}  // namespace ssm
