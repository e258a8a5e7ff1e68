// Whole-file I/O with one clear error per failure, and the write-to-temporary-then-rename rule:
// a failure or a crash never leaves a half-written file under the final name.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/tensor.h"

namespace ssm {

std::string read_text_file(const std::string& path);

// A file written with POSIX calls, so that a failure carries its reason (ENOSPC, EFBIG, EACCES, ...).
// Errors name `shown_name`, the file as the user knows it.
class OutputFile {
 public:
  OutputFile(const std::string& path, const std::string& shown_name);  // creates or truncates
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();  // closes without syncing if commit() was not reached
  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Flushes the file's bytes to the disk (fsync) and closes it.
  void commit();

 private:
  int fd_ = -1;
  std::string name_;
};

// Writes `path` through the temporary `.NAME.tmp-PID` beside it: `write` fills it, it is synced to
// the disk, renamed over `path`, and the folder synced, so that neither a killed process nor a power
// cut leaves `path` half-written or empty. On failure the temporary is removed, `path` is unchanged,
// and the error names `path` and the reason.
void write_atomically(const std::string& path, const std::function<void(OutputFile& out)>& write);
void write_text_file(const std::string& path, std::string_view text);

// Syncs a folder's entries (created, renamed or removed files) to the disk.
void sync_folder(const std::string& folder);

// The temporaries that write_atomically left in `folder` when its process died mid-write: removes
// them all, or only those of the file `name` when it is given. Returns how many were removed.
int remove_leftover_temporaries(const std::string& folder, const std::string& name = "");

// An exclusive lock on a folder (flock on the folder itself), held while the object lives. The
// kernel drops it when the process ends, however it ends; a second holder gets a clear error.
class FolderLock {
 public:
  FolderLock(const std::string& folder, const std::string& purpose);
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  ~FolderLock();

 private:
  int fd_ = -1;
};

// Read-only memory map of a whole file (kept alive by the returned storage).
std::shared_ptr<Storage> map_file(const std::string& path);
// Drops the resident pages of a tensor read from a file mapping once it has been copied elsewhere
// (they are read again from the file if touched later), so that a load that converts weights does
// not hold the file's bytes and the converted copy at the same time.
void release_mapped_pages(const Tensor& mapped);

}  // namespace ssm
