// Whole-file I/O with one clear error per failure, and the write-to-temporary-then-rename rule:
// a failure never leaves a half-written file under the final name.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace ssm {

std::string read_text_file(const std::string& path);
// Calls write(tmp_path), then renames tmp_path over `path`; removes tmp_path on failure.
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);
void write_text_file(const std::string& path, const std::string& text);

// Read-only memory map of a whole file (kept alive by the returned storage).
std::shared_ptr<Storage> map_file(const std::string& path);
// Drops the resident pages of a tensor read from a file mapping once it has been copied elsewhere
// (they are read again from the file if touched later), so that a load that converts weights does
// not hold the file's bytes and the converted copy at the same time.
void release_mapped_pages(const Tensor& mapped);

}  // namespace ssm
