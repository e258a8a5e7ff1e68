#include "bench/gpu_bench.h"

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "bench/inference.h"
#include "bench/random_model.h"
#include "core/device.h"
#include "core/error.h"
#include "core/json.h"
#include "core/random.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"

namespace ssm::bench {

namespace {

using Clock = std::chrono::steady_clock;

// mamba_ssm 2.3.2 on the same card (../shared/BENCHMARKS.md, 2026-11-30): its own generation loop with
// CUDA graphs (ms per step at batch 1, 16, 64) and MambaLMHeadModel prefill (ms at 1 x 2048, 8 x 2048,
// 1 x 65536; the head on the last position only). Mamba-2 shapes only.
struct PeerFigures {
  double decode_ms[3];
  double prefill_ms[3];
};
const std::map<std::string, PeerFigures> kPeer = {
    {"mamba2-130m", {{0.98, 1.24, 1.84}, {46.6, 44.5, 109}}},
    {"mamba2-1.3b", {{2.63, 3.92, 7.22}, {78.0, 162, 654}}},
};

struct GpuCeilings {
  double copy_gbs = 0;     // device-to-device copy, bytes read + written
  double bf16_tflops = 0;  // an 8192^3 BF16 product through ops::linear (cuBLASLt)
};

double seconds_of(int repeats, const std::function<void()>& work) {
  work();  // warm-up
  synchronize(Device::CUDA);
  const auto start = Clock::now();
  for (int i = 0; i < repeats; ++i) work();
  synchronize(Device::CUDA);
  return std::chrono::duration<double>(Clock::now() - start).count() / repeats;
}

Tensor random_gpu(const Shape& shape, DType dtype, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor host = Tensor::empty(shape);
  for (int64_t i = 0; i < host.numel(); ++i) host.data<float>()[i] = rng.uniform(lo, hi);
  return host.to(dtype).to_device(Device::CUDA);
}

GpuCeilings measure_gpu() {
  GpuCeilings c;
  const int64_t n = int64_t(1) << 28;  // 1 GiB of F32
  Tensor a = Tensor::zeros({n}, DType::F32, Device::CUDA), b = Tensor::zeros({n}, DType::F32, Device::CUDA);
  c.copy_gbs = 2.0 * double(n) * 4 / seconds_of(10, [&] { b.copy_from(a); }) / 1e9;
  c.bf16_tflops = measure_bf16_tflops();
  return c;
}

constexpr int64_t kScanLengths[4] = {4096, 16384, 65536, 102400};

std::string ratio(double ours, double peer) { return peer > 0 ? fmt::format(" ({:.2f}x)", ours / peer) : ""; }

// Random inputs of the two scan kernels at the shapes the issue times: Mamba-1 at D_inner 4096, N 16
// (with z, D, dt bias and softplus) and SSD at H 32, P 64, N 128, G 1; batch 1, BF16.
ops::SelectiveScanInputs scan_inputs(int64_t T, Rng& rng) {
  const int64_t D = 4096, N = 16;
  ops::SelectiveScanInputs in;
  in.u = random_gpu({1, T, D}, DType::BF16, rng);
  in.delta = random_gpu({1, T, D}, DType::BF16, rng, -3, 0);
  in.delta_bias = random_gpu({D}, DType::F32, rng, -1, 0);
  in.A = random_gpu({D, N}, DType::F32, rng, -4, -0.5f);
  in.B = random_gpu({1, T, N}, DType::BF16, rng);
  in.C = random_gpu({1, T, N}, DType::BF16, rng);
  in.D = random_gpu({D}, DType::F32, rng);
  in.z = random_gpu({1, T, D}, DType::BF16, rng, -2, 2);
  return in;
}

ops::SsdInputs ssd_inputs(int64_t T, Rng& rng) {
  const int64_t H = 32, P = 64, S = 128;
  ops::SsdInputs in;
  in.x = random_gpu({1, T, H * P}, DType::BF16, rng);
  in.dt = random_gpu({1, T, H}, DType::BF16, rng);
  in.dt_bias = random_gpu({H}, DType::F32, rng, -3.5f, -2.5f);
  in.A = random_gpu({H}, DType::F32, rng, -16, -1);
  in.B = random_gpu({1, T, S}, DType::BF16, rng);
  in.C = random_gpu({1, T, S}, DType::BF16, rng);
  in.D = random_gpu({H}, DType::F32, rng);
  return in;
}

// Mamba-3 (SISO) at the peer's favoured shape (mamba3_siso_combined's notes): H 32, P 64, N 128 with 32 rotation
// angles, one B/C group; raw projections in the ranges of a model (dt ~ softplus(−3), A around the heavy tail's bend).
ops::Mamba3Inputs mamba3_inputs(int64_t T, Rng& rng) {
  const int64_t H = 32, P = 64, N = 128, S = 32;
  ops::Mamba3Inputs in;
  in.x = random_gpu({1, T, H * P}, DType::BF16, rng);
  in.B = random_gpu({1, T, N}, DType::BF16, rng);
  in.C = random_gpu({1, T, N}, DType::BF16, rng);
  in.dt = random_gpu({1, T, H}, DType::BF16, rng, -1, 1);
  in.A = random_gpu({1, T, H}, DType::BF16, rng, -1, 1);
  in.trap = random_gpu({1, T, H}, DType::BF16, rng, -2, 2);
  in.angles = random_gpu({1, T, S}, DType::BF16, rng, -2, 2);
  in.dt_bias = random_gpu({H}, DType::F32, rng, -4, -3);
  in.B_bias = random_gpu({H, N}, DType::F32, rng, 0.5f, 1.5f);
  in.C_bias = random_gpu({H, N}, DType::F32, rng, 0.5f, 1.5f);
  in.D = random_gpu({H}, DType::F32, rng);
  return in;
}

Tensor gpu_zeros(const Tensor& like) { return Tensor::zeros(like.shape(), like.dtype(), Device::CUDA); }

// Mamba-1's training pair: the forward saving chunk states, then the backward of every input.
double scan_training_ms(const ops::SelectiveScanInputs& in, Rng& rng) {
  constexpr int64_t kChunk = 64;
  const int64_t T = in.u.size(1);
  Tensor y = gpu_zeros(in.u), dy = random_gpu(in.u.shape(), DType::BF16, rng);
  Tensor states = Tensor::zeros({1, ops::selective_scan_chunk_count(T, kChunk), in.A.size(0), in.A.size(1)},
                                DType::F32, Device::CUDA);
  ops::SelectiveScanGrads g;
  g.du = gpu_zeros(in.u);
  g.ddelta = gpu_zeros(in.delta);
  g.dB = gpu_zeros(in.B);
  g.dC = gpu_zeros(in.C);
  g.dz = gpu_zeros(in.z);
  g.dA = gpu_zeros(in.A);
  g.dD = gpu_zeros(in.D);
  g.ddelta_bias = gpu_zeros(in.delta_bias);
  return 1000 * seconds_of(10, [&] {
    ops::selective_scan_forward_saving_chunk_states(in, Tensor(), kChunk, y, states);
    ops::selective_scan_backward(in, Tensor(), states, kChunk, dy, g);
  });
}

// SSD's training pair: the forward, then the backward of every input; with keep_states as the Mamba-2
// layer runs it (the forward keeps the chunk states, the backward reads them), else as it runs under
// --recompute (the backward walks the states itself).
double ssd_training_ms(const ops::SsdInputs& in, bool keep_states, Rng& rng) {
  Tensor y = gpu_zeros(in.x), dy = random_gpu(in.x.shape(), DType::BF16, rng);
  ops::SsdGrads g;
  g.dx = gpu_zeros(in.x);
  g.ddt = gpu_zeros(in.dt);
  g.dB = gpu_zeros(in.B);
  g.dC = gpu_zeros(in.C);
  g.dA = gpu_zeros(in.A);
  g.dD = gpu_zeros(in.D);
  g.ddt_bias = gpu_zeros(in.dt_bias);
  return 1000 * seconds_of(10, [&] {
    Tensor states;
    if (keep_states) states = ops::ssd_forward_saving_chunk_states(in, y);
    else ops::ssd(in, nullptr, y);
    ops::ssd_backward(in, Tensor(), dy, g, Tensor(), states);
  });
}

}  // namespace

double measure_bf16_tflops() {
  Rng rng(7);
  const int64_t d = 8192;
  const Tensor x = random_gpu({d, d}, DType::BF16, rng), w = random_gpu({d, d}, DType::BF16, rng);
  Tensor y = Tensor::zeros({d, d}, DType::BF16, Device::CUDA);
  return 2.0 * double(d) * double(d) * double(d) / seconds_of(10, [&] { ops::linear(x, w, Tensor(), y); }) / 1e12;
}

ScanPeerTimes read_scan_peer_times(const std::string& path) {
  const Json file = read_json_file(path);
  ScanPeerTimes peers;
  const auto numbers = [&](const char* key) {
    const auto it = file.find(key);
    SSM_CHECK(file.is_object() && it != file.end() && it->is_array() && it->size() == std::size(kScanLengths),
              "{}: \"{}\" must be an array of {} numbers (scripts/gpu-peers.py writes it)", path, key,
              std::size(kScanLengths));
    std::vector<double> values;
    for (const Json& v : *it) {
      SSM_CHECK(v.is_number() && v.get<double>() > 0, "{}: \"{}\" holds {}, not a positive number", path, key,
                json_excerpt(v));
      values.push_back(v.get<double>());
    }
    return values;
  };
  const std::vector<double> lengths = numbers("lengths");
  for (size_t i = 0; i < lengths.size(); ++i)
    SSM_CHECK(lengths[i] == double(kScanLengths[i]), "{}: \"lengths\" must be {}, the scan table's, got {}", path,
              fmt::join(kScanLengths, ", "), fmt::join(lengths, ", "));
  peers.ssd_forward_ms = numbers("ssd_forward_ms");
  peers.ssd_training_ms = numbers("ssd_forward_backward_ms");
  if (file.contains("mamba3_forward_ms")) peers.mamba3_forward_ms = numbers("mamba3_forward_ms");
  const auto source = file.find("source");
  SSM_CHECK(source != file.end() && source->is_string(), "{}: \"source\" must be a string", path);
  peers.source = source->get<std::string>();
  if (const auto when = file.find("measured_at"); when != file.end()) {
    SSM_CHECK(when->is_string(), "{}: \"measured_at\" must be a string", path);
    peers.measured_at = when->get<std::string>();
  }
  return peers;
}

void scan_kernel_table(uint64_t seed, bool training, const ScanPeerTimes& peers) {
  // mamba_ssm on the H200 (../shared/BENCHMARKS.md, 2026-11-28), ms: forward, and forward + backward.
  // The SSD's at 4K and 16K are mostly its Python launches (docs/performance.md, "The peer timed on
  // the same machine"): --peer-times gives its kernels' times.
  constexpr double kPeerScan[4] = {0.32, 1.52, 5.95, 9.50}, kPeerSsd[4] = {0.54, 1.11, 1.27, 2.00};
  constexpr double kPeerScanTrain[4] = {1.66, 6.57, 25.9, 42.5}, kPeerSsdTrain[4] = {4.35, 3.72, 5.72, 9.08};
  const std::vector<double>& measured = training ? peers.ssd_training_ms : peers.ssd_forward_ms;
  const double* peer_ssd = !measured.empty() ? measured.data() : training ? kPeerSsdTrain : kPeerSsd;
  Rng rng(seed);
  std::printf("| scan kernel, batch 1, BF16, %s | 4K | 16K | 64K | 100K tokens (ms, x peer) |\n"
              "| --- | --- | --- | --- | --- |\n",
              training ? "forward + backward" : "forward");
  std::string scan_row = "| Mamba-1 selective scan, D 4096, N 16 (peer: mamba_ssm CUDA, BENCHMARKS.md)";
  // The peer's file may come from another run (or machine): the label says what and when, not "this run".
  const std::string when = peers.measured_at.empty() ? "" : " on " + peers.measured_at;
  const std::string ssd_peer =
      measured.empty() ? "mamba_ssm Triton, BENCHMARKS.md" : peers.source + ", timed by scripts/gpu-peers.py" + when;
  std::string ssd_row = fmt::format("| Mamba-2 SSD, H 32, P 64, N 128 (peer: {})", ssd_peer);
  std::string ssd_walked_row =
      fmt::format("| Mamba-2 SSD, the states walked in the backward as under --recompute (peer: {})", ssd_peer);
  // Mamba-3 has no GPU backward yet: a forward row only; the peer's figure only where --peer-times has one.
  const std::vector<double>& peer_mamba3 = peers.mamba3_forward_ms;
  std::string mamba3_row = fmt::format("| Mamba-3 SISO, H 32, P 64, N 128, 32 angles (peer: {})",
                                       peer_mamba3.empty() ? "none timed" : peers.source + when);
  for (int i = 0; i < 4; ++i) {
    const int64_t T = kScanLengths[i];
    {
      const ops::SelectiveScanInputs in = scan_inputs(T, rng);
      Tensor y = gpu_zeros(in.u);
      const double ms = training ? scan_training_ms(in, rng)
                                 : 1000 * seconds_of(20, [&] { ops::selective_scan(in, nullptr, y); });
      scan_row += fmt::format(" | {:.3f}{}", ms, ratio(ms, training ? kPeerScanTrain[i] : kPeerScan[i]));
    }
    {
      const ops::SsdInputs in = ssd_inputs(T, rng);
      Tensor y = gpu_zeros(in.x);
      const double ms =
          training ? ssd_training_ms(in, true, rng) : 1000 * seconds_of(20, [&] { ops::ssd(in, nullptr, y); });
      ssd_row += fmt::format(" | {:.3f}{}", ms, ratio(ms, peer_ssd[i]));
      if (training) {
        const double walked_ms = ssd_training_ms(in, false, rng);
        ssd_walked_row += fmt::format(" | {:.3f}{}", walked_ms, ratio(walked_ms, peer_ssd[i]));
      }
    }
    if (!training) {
      const ops::Mamba3Inputs in = mamba3_inputs(T, rng);
      Tensor y = gpu_zeros(in.x);
      const double ms = 1000 * seconds_of(20, [&] { ops::mamba3(in, nullptr, y); });
      mamba3_row += fmt::format(" | {:.3f}{}", ms, peer_mamba3.empty() ? "" : ratio(ms, peer_mamba3[size_t(i)]));
    }
  }
  std::printf("%s |\n%s |\n", scan_row.c_str(), ssd_row.c_str());
  std::printf("%s |\n", training ? ssd_walked_row.c_str() : mamba3_row.c_str());
  std::printf("\n");
  std::fflush(stdout);
}

void run_gpu_bench(const GpuBenchOptions& o) {
  require_device(Device::CUDA);
  const GpuCeilings machine = measure_gpu();
  std::printf("GPU ceilings: device-to-device copy %.0f GB/s (read + write), BF16 matrix product %.0f TFLOP/s\n\n",
              machine.copy_gbs, machine.bf16_tflops);
  if (o.scan_kernels) scan_kernel_table(o.seed, /*training=*/false, o.peers);
  std::printf("| model | weights | decode ms/step, batch %s (x mamba_ssm) | decode tok/s at %lld | batch-1 "
              "floor ms (reached) | prefill ms, 1x2048 / 8x2048 / 1x65536 (x mamba_ssm) | matmul TFLOP/s at 8x2048 "
              "(%% of peak) | peak GPU MiB |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
              fmt::format("{}", fmt::join(o.decode_batches, " / ")).c_str(), (long long)o.decode_batches.back());
  std::fflush(stdout);
  for (const std::string& shape : o.shapes) {
    reset_device_peak_bytes();
    LanguageModel model = random_model(published_shape(shape), DType::F32, o.seed);
    model.to_device(Device::CUDA, o.weights);
    const auto peer = kPeer.find(shape);
    std::string decode, prefill;
    double last_tokens_per_second = 0, floor_ms = 0, batch1_ms = 0;
    for (size_t i = 0; i < o.decode_batches.size(); ++i) {
      const int64_t batch = o.decode_batches[i];
      const InferenceMeasure m = measure_inference(model, {o.decode_prompt}, o.decode_tokens, o.seed, batch);
      const double ms = 1000 * m.decode.seconds / (double(m.decode.tokens) / double(batch));
      const int peer_column = batch == 1 ? 0 : batch == 16 ? 1 : batch == 64 ? 2 : -1;
      decode += fmt::format("{}{:.3f}{}", i ? " / " : "", ms,
                            peer != kPeer.end() && peer_column >= 0 ? ratio(ms, peer->second.decode_ms[peer_column]) : "");
      last_tokens_per_second = m.decode.tokens_per_second();
      if (batch == 1) {
        batch1_ms = ms;
        floor_ms = 1000 * decode_bytes_per_token(model, 1) / (machine.copy_gbs * 1e9);
      }
    }
    const std::pair<int64_t, int64_t> prefills[3] = {{1, 2048}, {8, 2048}, {1, 65536}};
    double matmul_tflops = 0;
    for (int i = 0; i < 3; ++i) {
      const auto [batch, length] = prefills[i];
      const InferenceMeasure m = measure_inference(model, {length}, 1, o.seed, batch);
      const double ms = 1000 * m.prefill[0].seconds;
      prefill += fmt::format("{}{:.2f}{}", i ? " / " : "", ms, peer != kPeer.end() ? ratio(ms, peer->second.prefill_ms[i]) : "");
      if (i == 1) matmul_tflops = double(batch) * prefill_matmul_flops(model, length) / m.prefill[0].seconds / 1e12;
    }
    std::printf("| %s | %s | %s | %.0f | %.3f (%.0f%%) | %s | %.0f (%.0f%%) | %.0f |\n", shape.c_str(),
                std::string(dtype_name(o.weights)).c_str(), decode.c_str(), last_tokens_per_second, floor_ms,
                batch1_ms > 0 ? 100 * floor_ms / batch1_ms : 0.0, prefill.c_str(), matmul_tflops,
                100 * matmul_tflops / machine.bf16_tflops, double(device_peak_bytes()) / 1048576.0);
    std::fflush(stdout);
  }
}

}  // namespace ssm::bench
