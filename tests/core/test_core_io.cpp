// core: dtype conversions, views, .npy and safetensors round trips and their validation, JSON numbers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <vector>

#include "core/file_util.h"
#include "core/json.h"
#include "core/npy.h"
#include "core/safetensors.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

std::string temp_file(const std::string& name) {
  return (fs::temp_directory_path() / ("ssm_core_" + std::to_string(::getpid()) + "_" + name)).string();
}

// A safetensors file's bytes: the header's length, the header, the data.
std::string safetensors_bytes(const Json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char((text.size() >> (8 * i)) & 0xff);
  return bytes + text + data;
}

// A version 1.0 .npy file's bytes with `header` (padded) and `data`.
std::string npy_bytes(std::string header, const std::string& data) {
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  return std::string("\x93NUMPY\x01\x00", 8) + char(header.size() & 0xff) + char(header.size() >> 8) + header + data;
}

TEST(CoreDType, HalfAndBfloatConversions) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;  // exactly representable in f16
  }
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // halfway: ties to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
}

TEST(CoreTensor, ViewsShareStorageAndConvertExactly) {
  Tensor t = Tensor::empty({2, 3, 4});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = float(i);
  const Tensor column = t.slice(2, 1, 2);
  EXPECT_TRUE(column.has_uniform_rows());
  EXPECT_EQ(column.row_stride(), 4);
  EXPECT_EQ(column.contiguous().data<float>()[2], 5.0f);
  EXPECT_EQ(t.select(1, 2).contiguous().data<float>()[0], 8.0f);
  Tensor big = Tensor::empty({1}, DType::I64);
  big.data<int64_t>()[0] = 123456789;  // not exact in float: integer conversions must not go through it
  EXPECT_EQ(big.to(DType::I32).data<int32_t>()[0], 123456789);
  EXPECT_EQ(Tensor::empty({3, 0}).rows(), 3);
}

TEST(CoreNpy, RoundTripsEveryDtypeAndShape) {
  const std::string path = temp_file("a.npy");
  for (DType dtype : {DType::F32, DType::I32, DType::I64}) {
    for (const Shape& shape : {Shape{5}, Shape{2, 3}, Shape{1, 2, 3}}) {
      Tensor t = Tensor::empty(shape, dtype);
      for (int64_t i = 0; i < t.numel(); ++i) {
        if (dtype == DType::F32) t.data<float>()[i] = 0.5f * float(i);
        if (dtype == DType::I32) t.data<int32_t>()[i] = int32_t(i * 7);
        if (dtype == DType::I64) t.data<int64_t>()[i] = int64_t(i) << 40;
      }
      write_npy(path, t);
      const Tensor back = read_npy(path);
      ASSERT_EQ(back.shape(), shape);
      ASSERT_EQ(back.dtype(), dtype);
      EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0);
    }
  }
  fs::remove(path);
}

TEST(CoreNpy, RefusesFortranOrderAndOtherDtypes) {
  const std::string path = temp_file("f.npy");
  std::string header = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  write_text_file(path, std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + '\0' + header + "abcd");
  EXPECT_THROW(read_npy(path), Error);
  std::string f8 = header;
  f8.replace(f8.find("<f4"), 3, "<f8");
  f8.replace(f8.find("True"), 4, "False");
  write_text_file(path, std::string("\x93NUMPY\x01\x00", 8) + char(f8.size()) + '\0' + f8 + "abcdefgh");
  try {
    read_npy(path);
    FAIL() << "float64 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<f8"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

TEST(CoreSafetensors, RoundTripAndOverlapRefused) {
  const std::string path = temp_file("t.safetensors");
  Tensor a = Tensor::empty({2, 2});
  for (int i = 0; i < 4; ++i) a.data<float>()[i] = float(i);
  const Tensor b = a.to(DType::BF16);
  write_safetensors(path, {{"a", a}, {"b", b}});
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    EXPECT_EQ(file.get("b").dtype(), DType::BF16);
    EXPECT_EQ(file.get("a").data<float>()[3], 3.0f);
    EXPECT_EQ(file.metadata().at("format"), "pt");
    EXPECT_THROW(file.get("c"), Error);
  }
  // Point b's bytes into a's: overlapping tensors are refused.
  std::string bytes = read_text_file(path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | uint8_t(bytes[size_t(i)]);
  Json header = Json::parse(bytes.substr(8, header_size));
  header["b"]["data_offsets"] = {8, 16};
  write_text_file(path, safetensors_bytes(header, bytes.substr(8 + header_size)));
  try {
    SafetensorsFile::open(path);
    FAIL() << "overlap accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

// UBSan finding (a slot file: I32 token ids, then I64 lengths): the format does not align tensors,
// and an I64 read in place at an offset of 12 is undefined. Files from elsewhere are read through an
// aligned copy; files written here put larger elements first, so every tensor starts aligned.
TEST(CoreSafetensors, MisalignedTensorsAreReadThroughACopy) {
  const std::string path = temp_file("misaligned.safetensors");
  Tensor ids = Tensor::empty({3}, DType::I32), lengths = Tensor::empty({2}, DType::I64);
  for (int i = 0; i < 3; ++i) ids.data<int32_t>()[i] = 7 + i;
  lengths.data<int64_t>()[0] = int64_t(1) << 40;
  lengths.data<int64_t>()[1] = -3;
  std::string data(reinterpret_cast<const char*>(ids.raw()), ids.nbytes());
  data.append(reinterpret_cast<const char*>(lengths.raw()), lengths.nbytes());
  const Json header = {{"ids", {{"dtype", "I32"}, {"shape", {3}}, {"data_offsets", {0, 12}}}},
                       {"lengths", {{"dtype", "I64"}, {"shape", {2}}, {"data_offsets", {12, 28}}}}};
  write_text_file(path, safetensors_bytes(header, data));
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    const Tensor& read = file.get("lengths");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(read.raw()) % alignof(int64_t), 0u);
    EXPECT_EQ(read.data<int64_t>()[0], int64_t(1) << 40);
    EXPECT_EQ(read.data<int64_t>()[1], -3);
    EXPECT_EQ(file.get("ids").data<int32_t>()[2], 9);
  }
  write_safetensors(path, {{"ids", ids}, {"lengths", lengths}});
  std::string bytes = read_text_file(path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | uint8_t(bytes[size_t(i)]);
  const Json written = Json::parse(bytes.substr(8, header_size));
  EXPECT_EQ(written["lengths"]["data_offsets"][0], 0);
  EXPECT_EQ(written["ids"]["data_offsets"][0], 16);
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.get("lengths").data<int64_t>()[0], int64_t(1) << 40);
  EXPECT_EQ(file.get("ids").data<int32_t>()[0], 7);
  fs::remove(path);
}

// Sanitizer finding: the element count of a stored shape was multiplied without a bound, so a shape
// whose size wraps (2^32 × 2^32 = 2^64 → 0, signed overflow) passed as a tensor of 0 bytes, and an extent
// above 2^63 became negative.
TEST(CoreSafetensors, RefusesShapesWhoseSizeOverflows) {
  const std::string path = temp_file("huge.safetensors");
  const uint64_t big = 1ull << 32;
  // An empty tensor too: its strides are products of the non-zero extents (found by fuzz_npy).
  for (const Json& shape : {Json{big, big}, Json{(1ull << 63) + 1}, Json{1ull << 62, 4}, Json{0, big, big}}) {
    write_text_file(path, safetensors_bytes({{"w", {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {0, 0}}}}}, ""));
    try {
      SafetensorsFile::open(path);
      FAIL() << "shape " << shape.dump() << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("impossible shape"), std::string::npos) << e.what();
    }
  }
  fs::remove(path);
}

TEST(CoreSafetensors, IndexNamesOnlyFilesBesideIt) {
  const std::string path = temp_file("model.safetensors.index.json");
  write_text_file(path, R"({"metadata": {}, "weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})");
  const auto shards = read_safetensors_index(path);
  EXPECT_EQ(shards.at("a"), "model-1.safetensors");
  EXPECT_EQ(shards.at("b"), "model-2.safetensors");
  for (const char* shard : {"../secret.safetensors", "/etc/passwd", "", "..", "sub/model.safetensors"}) {
    write_text_file(path, Json{{"weight_map", {{"a", shard}}}}.dump());
    EXPECT_THROW(read_safetensors_index(path), Error) << shard;
  }
  for (const char* text : {R"({"weight_map": {"a": 1}})", R"({"weight_map": []})", "[]"}) {
    write_text_file(path, text);
    EXPECT_THROW(read_safetensors_index(path), Error) << text;
  }
  fs::remove(path);
}

// Sanitizer findings: an extent with more digits than int64 holds escaped as std::out_of_range (not
// ssm::Error), a shape whose size wraps passed the size check, and a header of megabytes sent std::regex
// (recursive) into a stack overflow.
TEST(CoreNpy, RefusesHugeExtentsAndHeaders) {
  const std::string path = temp_file("huge.npy");
  for (const char* shape : {"(99999999999999999999,)", "(4294967296, 4294967296)", "(4611686018427387904, 2)",
                            "(0, 25645553, 564799425649)"}) {
    write_text_file(path, npy_bytes(fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}", shape), ""));
    EXPECT_THROW(read_npy(path), Error) << shape;
  }
  std::string header = "{'descr': '" + std::string(200000, 'x') + "', 'fortran_order': False, 'shape': (1,), }\n";
  std::string v2("\x93NUMPY\x02\x00", 8);
  for (int i = 0; i < 4; ++i) v2.push_back(char((header.size() >> (8 * i)) & 0xff));
  write_text_file(path, v2 + header + "abcd");
  try {
    read_npy(path);
    FAIL() << "a 200 kB header accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

// A corrupt file nesting 300,000 '['s crashed the reader (a stack overflow in Json::dump, quoting the
// value in its error message): JSON is parsed 512 levels deep at most, and errors quote an excerpt.
TEST(CoreJson, DeepNestingIsOneClearError) {
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  const auto expect_too_deep = [](const std::function<void()>& read, const std::string& what) {
    try {
      read();
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("nested more than 512 levels"), std::string::npos) << e.what();
    }
  };
  const std::string json_path = temp_file("deep.json");
  write_text_file(json_path, "{\"a\": " + deep + "}");
  expect_too_deep([&] { read_json_file(json_path); }, "a JSON file");
  const std::string st_path = temp_file("deep.safetensors");
  std::string header = R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": )" + deep + "}}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(uint64_t(header.size()) >> (8 * i));
  write_text_file(st_path, bytes + header + std::string(4, '\0'));
  expect_too_deep([&] { SafetensorsFile::open(st_path); }, "a safetensors header");
  // 511 levels are fine; an error quoting a deep or long value quotes an excerpt.
  EXPECT_NO_THROW(parse_json(std::string(511, '[') + std::string(511, ']')));
  const std::string excerpt = json_excerpt(parse_json(std::string(500, '[') + "1" + std::string(500, ']')));
  EXPECT_LE(excerpt.size(), 123u) << excerpt;
  EXPECT_NE(excerpt.find("[...]"), std::string::npos) << excerpt;
  EXPECT_LE(json_excerpt(Json(std::string(1 << 20, 'x'))).size(), 123u);
  EXPECT_EQ(json_excerpt(parse_json(R"({"a": [1, 2], "b": "c"})")), R"({"a": [1, 2], "b": "c"})");
  fs::remove(json_path);
  fs::remove(st_path);
}

TEST(CoreJson, TransformersInfinityEncoding) {
  EXPECT_EQ(json_to_double(Json::parse(R"({"__float__": "Infinity"})"), "x"), std::numeric_limits<double>::infinity());
  EXPECT_EQ(json_to_double(Json::parse(R"({"__float__": "-Infinity"})"), "x"), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(json_to_double(Json::parse("0.5"), "x"), 0.5);
  EXPECT_THROW(json_to_double(Json::parse(R"("inf")"), "x"), Error);
}

TEST(CoreFiles, FailedWriteLeavesTheOldFile) {
  const std::string path = temp_file("keep.txt");
  write_text_file(path, "old");
  EXPECT_THROW(write_atomically(path, [](OutputFile& out) {
                 out.write("new, partly");
                 fail("disk full");
               }),
               Error);
  EXPECT_EQ(read_text_file(path), "old");
  EXPECT_EQ(remove_leftover_temporaries(fs::path(path).parent_path().string(), fs::path(path).filename().string()), 0)
      << "the failed write left its temporary";
  fs::remove(path);
}

// A full disk: the error names the file and the reason.
TEST(CoreFiles, WriteErrorsNameTheFileAndTheReason) {
  try {
    OutputFile out("/dev/full", "the output");
    out.write(std::string(100000, 'x'));
    out.commit();
    FAIL() << "writing /dev/full succeeded";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "cannot write 'the output': No space left on device");
  }
  try {
    write_text_file(temp_file("no_such_folder") + "/file.txt", "x");
    FAIL() << "writing into a missing folder succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_folder/file.txt': No such file or directory"), std::string::npos)
        << e.what();
  }
}

// What a killed writer leaves (.NAME.tmp-PID) is found and removed; other files stay.
TEST(CoreFiles, LeftoverTemporariesAreRemoved) {
  const fs::path folder = temp_file("leftovers");
  fs::create_directories(folder);
  for (const char* name : {".model.safetensors.tmp-123", ".metrics.jsonl.tmp-9", "keep.txt", "keep.tmp-12",
                           ".keep.tmp-", ".keep.tmp-12a", ".tmp-34"})
    write_text_file((folder / name).string(), "x");
  fs::create_directories(folder / ".dir.tmp-5");
  EXPECT_EQ(remove_leftover_temporaries(folder.string(), "metrics.jsonl"), 1);
  EXPECT_TRUE(fs::exists(folder / ".model.safetensors.tmp-123"));
  EXPECT_EQ(remove_leftover_temporaries(folder.string()), 1);
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(folder)) left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{".dir.tmp-5", ".keep.tmp-", ".keep.tmp-12a", ".tmp-34", "keep.tmp-12",
                                            "keep.txt"}));
  fs::remove_all(folder);
}

TEST(CoreFiles, FolderLockIsExclusive) {
  const fs::path folder = temp_file("locked");
  fs::create_directories(folder);
  {
    const FolderLock lock(folder.string(), "a test holds it");
    try {
      const FolderLock second(folder.string(), "a test holds it");
      FAIL() << "a second lock was granted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is in use by another process (a test holds it)"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_NO_THROW(FolderLock(folder.string(), "a test holds it"));  // released with the first
  fs::remove_all(folder);
}

}  // namespace
}  // namespace ssm
