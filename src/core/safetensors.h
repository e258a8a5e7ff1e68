// safetensors files: a validated, memory-mapped reader and an atomic writer.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace ssm {

class SafetensorsFile {
 public:
  // Maps `path` and validates the header (size bound, JSON, dtype names, shapes, offsets within
  // the file, no overlaps, byte size = numel × dtype size). Throws ssm::Error naming the file.
  static SafetensorsFile open(const std::string& path);

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor as stored (a view into the mapping, read-only).
  const Tensor& get(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A sharded checkpoint's model.safetensors.index.json: tensor name → shard file. Shards are plain file
// names beside the index (a name with a folder in it could point anywhere). Throws ssm::Error naming the file.
std::map<std::string, std::string> read_safetensors_index(const std::string& path);

// Writes tensors to `path` through a temporary file and a rename; the data holds them larger elements
// first, in the given order otherwise, so that each starts aligned to its element size.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace ssm
