// Copies of GPU memory made many at once (copy_many: one kernel for all of them), and a sequence's
// state copied between GPU states that way: every byte where a copy one by one puts it, whatever the
// alignment, the size or the number of copies (more than one launch holds), and the layers that copy
// otherwise (a hybrid's KV caches) beside those that do.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/random.h"
#include "gpu/gpu_test_util.h"
#include "model/language_model.h"

namespace ssm {
namespace {

using gpu_test::require_gpu;

std::string fixture(const std::string& name) { return std::string(SSM_TEST_DATA_DIR) + "/hf/" + name; }

double max_abs(const Tensor& gpu) {
  const Tensor host = gpu_test::to_cpu(gpu);
  double most = 0;
  for (int64_t i = 0; i < host.numel(); ++i) most = std::max(most, double(std::fabs(host.data<float>()[i])));
  return most;
}

std::vector<unsigned char> bytes_of(const Tensor& gpu) {
  const Tensor host = gpu.to_device(Device::CPU);
  const auto* p = static_cast<const unsigned char*>(host.raw());
  return {p, p + host.nbytes()};
}

TEST(DeviceCopies, ManyRangesOfEveryAlignmentAsOneByOne) {
  require_gpu();
  Rng rng(3);
  const int64_t size = 3 << 20;
  Tensor source_host = Tensor::empty({size}, DType::I32);
  for (int64_t i = 0; i < size; ++i) source_host.data<int32_t>()[i] = int32_t(rng.next_u64());
  const Tensor source = source_host.to_device(Device::CUDA);
  const Tensor target = Tensor::zeros({size}, DType::I32, Device::CUDA);
  auto* dst = static_cast<char*>(target.raw());
  const auto* src = static_cast<const char*>(source.raw());
  // 150 copies (three launches' worth): sizes from 0 bytes to 1 MB, offsets 16-byte aligned, 4-byte
  // aligned or neither, each into its own part of the target.
  std::vector<ByteCopy> copies;
  const size_t sizes[] = {0, 1, 3, 4, 16, 17, 100, 4096, 4099, 65536, 1 << 20};
  size_t written = 0;
  for (int i = 0; i < 150; ++i) {
    const size_t bytes = sizes[i % 11] + (i % 3 == 2 ? 5 : 0), misalign = i % 3 == 0 ? 0 : i % 3 == 1 ? 4 : 7;
    written = (written + 15) / 16 * 16 + misalign;
    if (bytes > 300000 && i > 40) continue;  // three of 1 MB are enough
    copies.push_back({dst + written, src + (i * 977 + misalign) % 4096 + (bytes > 300000 ? 0 : 8192 * i), bytes});
    written += bytes;
  }
  ASSERT_GT(copies.size(), 128u);
  copy_many(copies, Device::CUDA);
  std::vector<unsigned char> want(size_t(size) * 4, 0);
  const std::vector<unsigned char> from = bytes_of(source);
  for (const ByteCopy& c : copies)
    std::memcpy(want.data() + (static_cast<char*>(c.dst) - dst), from.data() + (static_cast<const char*>(c.src) - src),
                c.bytes);
  EXPECT_TRUE(bytes_of(target) == want);
}

// A hybrid (Mamba-2 and attention layers): the conv + SSM rows go through one copy_many, the KV
// caches through their own copy_sequence; the copied row exports as the source's did.
TEST(StateCopyGpu, RowsOfEveryLayerAsExported) {
  require_gpu();
  for (const char* name : {"mamba2_tiny", "bamba_tiny"}) {
    const LanguageModel model =
        LanguageModel::load(fixture(name), {.weights = WeightDType::F32, .device = Device::CUDA});
    ModelState source = model.new_state(3);
    Tensor ids = Tensor::empty({3, 5}, DType::I32);
    for (int64_t i = 0; i < 15; ++i) ids.data<int32_t>()[i] = int32_t(i * 7 % 50 + 1);
    model.forward(ids, &source, false);
    ModelState copied = model.new_state(2);
    source.copy_sequence(2, copied, 1);
    const StateTensors want = source.export_sequence(2), got = copied.export_sequence(1),
                       untouched = copied.export_sequence(0);
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(gpu_test::same_bits(got[i].second, want[i].second)) << name << " " << got[i].first;
      if (got[i].first.ends_with(".conv") || got[i].first.ends_with(".ssm")) {  // the row not copied into stays blank
        EXPECT_EQ(max_abs(untouched[i].second), 0.0) << name << " " << got[i].first;
      }
    }
  }
}

}  // namespace
}  // namespace ssm
