#include "core/safetensors.h"

#include <cstring>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/json.h"

namespace ssm {

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit

struct Span {
  uint64_t begin, end;
  std::string name;
};
}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  auto mapping = map_file(path);
  const auto* bytes = static_cast<const uint8_t*>(mapping->data());
  const uint64_t file_size = mapping->bytes();
  SSM_CHECK(file_size >= 8, "'{}' is not a safetensors file: only {} bytes", path, file_size);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  SSM_CHECK(header_size <= kMaxHeaderBytes && header_size <= file_size - 8,
            "'{}': header size {} exceeds the file ({} bytes): truncated or not safetensors", path, header_size,
            file_size);
  nlohmann::json header;
  try {
    header = parse_json(std::string_view(reinterpret_cast<const char*>(bytes) + 8, header_size));
  } catch (const nlohmann::json::exception& e) {
    fail("'{}': header is not valid JSON ({})", path, e.what());
  }
  SSM_CHECK(header.is_object(), "'{}': header is not a JSON object", path);
  const uint64_t data_start = 8 + header_size, data_size = file_size - data_start;
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      SSM_CHECK(entry.is_object(), "'{}': __metadata__ is not an object", path);
      for (const auto& [key, value] : entry.items()) {
        SSM_CHECK(value.is_string(), "'{}': metadata '{}' is not a string", path, key);
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    SSM_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") &&
                  entry.contains("data_offsets"),
              "'{}': tensor '{}' lacks dtype, shape or data_offsets", path, name);
    const auto& dtype_json = entry["dtype"];
    DType dtype;
    SSM_CHECK(dtype_json.is_string() && dtype_from_name(dtype_json.get<std::string>(), &dtype),
              "'{}': tensor '{}' has unsupported dtype {}", path, name, json_excerpt(dtype_json));
    Shape shape;
    SSM_CHECK(entry["shape"].is_array(), "'{}': tensor '{}' shape is not an array", path, name);
    for (const auto& extent : entry["shape"]) {
      SSM_CHECK(extent.is_number_unsigned(), "'{}': tensor '{}' has a bad shape {}", path, name,
                json_excerpt(entry["shape"]));
      shape.push_back(extent.get<int64_t>());
    }
    const auto& offsets = entry["data_offsets"];
    SSM_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                  offsets[1].is_number_unsigned(),
              "'{}': tensor '{}' has bad data_offsets {}", path, name, json_excerpt(offsets));
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    SSM_CHECK(begin <= end && end <= data_size,
              "'{}': tensor '{}' data [{}, {}) lies outside the file's {} data bytes (truncated file?)", path,
              name, begin, end, data_size);
    const std::optional<int64_t> nbytes = checked_nbytes(shape, dtype);
    SSM_CHECK(nbytes, "'{}': tensor '{}' has an impossible shape {}", path, name, json_excerpt(entry["shape"]));
    const uint64_t expected = uint64_t(*nbytes);
    SSM_CHECK(end - begin == expected, "'{}': tensor '{}' of shape {} {} needs {} bytes but has {}", path, name,
              shape_str(shape), dtype_name(dtype), expected, end - begin);
    spans.push_back({begin, end, name});
    // The format does not align tensors (a file may hold an I32 [3] before an I64): one whose bytes
    // do not start at a multiple of its element size is copied, since reading it in place is undefined.
    Tensor view = Tensor::wrap(mapping, data_start + begin, shape, dtype);
    if ((data_start + begin) % dtype_size(dtype) != 0) {
      Tensor aligned = Tensor::empty(shape, dtype);
      if (expected > 0) std::memcpy(aligned.raw(), view.raw(), expected);
      view = aligned;
    }
    file.tensors_[name] = view;
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    SSM_CHECK(spans[i].begin >= spans[i - 1].end, "'{}': tensors '{}' and '{}' overlap", path, spans[i - 1].name,
              spans[i].name);
  }
  return file;
}

const Tensor& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  SSM_CHECK(it != tensors_.end(), "'{}': missing tensor '{}'", path_, name);
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, tensor] : tensors_) out.push_back(name);
  return out;
}

std::map<std::string, std::string> read_safetensors_index(const std::string& path) {
  const Json json = read_json_file(path);
  SSM_CHECK(json.is_object() && json.contains("weight_map") && json["weight_map"].is_object(),
            "'{}' has no weight_map", path);
  std::map<std::string, std::string> shards;
  for (const auto& [name, shard] : json["weight_map"].items()) {
    SSM_CHECK(shard.is_string(), "'{}': weight_map entry '{}' is not a file name", path, name);
    const std::string file = shard.get<std::string>();
    SSM_CHECK(!file.empty() && file != "." && file != ".." && file.find('/') == std::string::npos &&
                  file.find('\0') == std::string::npos,
              "'{}': weight_map entry '{}' names '{}', which is not a file beside the index", path, name, file);
    shards[name] = file;
  }
  return shards;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Larger elements first (stable), as Python's safetensors lays them out: the data starts 8-byte
  // aligned, so every tensor then starts at a multiple of its element size.
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& entry : tensors) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return dtype_size(a->second.dtype()) > dtype_size(b->second.dtype());
  });
  uint64_t offset = 0;
  for (const auto* entry : order) {
    const auto& [name, tensor] = *entry;
    SSM_CHECK(tensor.device() == Device::CPU, "write_safetensors: tensor '{}' is not on the CPU", name);
    header[name] = {{"dtype", dtype_name(tensor.dtype())},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, offset + tensor.nbytes()}}};
    offset += tensor.nbytes();
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  write_atomically(path, [&](OutputFile& out) {
    uint8_t size_bytes[8];
    for (int i = 0; i < 8; ++i) size_bytes[i] = uint8_t(uint64_t(header_text.size()) >> (8 * i));
    out.write(size_bytes, 8);
    out.write(header_text);
    for (const auto* entry : order) {
      const Tensor dense = entry->second.contiguous();
      out.write(dense.raw(), dense.nbytes());
    }
  });
}

}  // namespace ssm
