#include "core/file_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ssm {

namespace fs = std::filesystem;

namespace {

const std::string kTemporaryMark = ".tmp-";

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// `.NAME.tmp-PID` for NAME, as write_atomically names its temporaries.
std::string temporary_name(const std::string& name) { return "." + name + kTemporaryMark + std::to_string(::getpid()); }

// The NAME of a temporary `.NAME.tmp-DIGITS`, or "" when `file` is not one.
std::string temporary_target(const std::string& file) {
  const size_t mark = file.rfind(kTemporaryMark);
  if (file.size() < 2 || file[0] != '.' || mark == std::string::npos || mark < 2) return "";
  const std::string digits = file.substr(mark + kTemporaryMark.size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return "";
  return file.substr(1, mark - 1);
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SSM_CHECK(in.good(), "cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  SSM_CHECK(!in.bad(), "cannot read '{}'", path);
  return buffer.str();
}

OutputFile::OutputFile(const std::string& path, const std::string& shown_name) : name_(shown_name) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  SSM_CHECK(fd_ >= 0, "cannot create '{}': {}", name_, std::strerror(errno));
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* data, size_t bytes) {
  SSM_CHECK(fd_ >= 0, "'{}' is already closed", name_);
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    SSM_CHECK(n > 0, "cannot write '{}': {}", name_, std::strerror(n < 0 ? errno : ENOSPC));
    p += n;
    bytes -= size_t(n);
  }
}

void OutputFile::commit() {
  SSM_CHECK(fd_ >= 0, "'{}' is already closed", name_);
  const int synced = ::fsync(fd_), sync_error = errno;
  const int closed = ::close(fd_), close_error = errno;
  fd_ = -1;
  SSM_CHECK(synced == 0, "cannot write '{}': {}", name_, std::strerror(sync_error));
  SSM_CHECK(closed == 0, "cannot write '{}': {}", name_, std::strerror(close_error));
}

void write_atomically(const std::string& path, const std::function<void(OutputFile&)>& write) {
  const std::string folder = folder_of(path);
  const std::string tmp_path = (fs::path(folder) / temporary_name(fs::path(path).filename().string())).string();
  try {
    OutputFile out(tmp_path, path);
    write(out);
    out.commit();
    SSM_CHECK(::rename(tmp_path.c_str(), path.c_str()) == 0, "cannot write '{}': {}", path, std::strerror(errno));
  } catch (...) {
    ::unlink(tmp_path.c_str());
    throw;
  }
  sync_folder(folder);
}

void write_text_file(const std::string& path, std::string_view text) {
  write_atomically(path, [&](OutputFile& out) { out.write(text); });
}

void sync_folder(const std::string& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  SSM_CHECK(fd >= 0, "cannot open folder '{}': {}", folder, std::strerror(errno));
  // EINVAL: a file system that cannot sync folders (some FUSE and network ones); nothing to wait for.
  const int synced = ::fsync(fd), sync_error = errno;
  ::close(fd);
  SSM_CHECK(synced == 0 || sync_error == EINVAL, "cannot sync folder '{}': {}", folder, std::strerror(sync_error));
}

int remove_leftover_temporaries(const std::string& folder, const std::string& name) {
  int removed = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    const std::string target = temporary_target(entry.path().filename().string());
    if (target.empty() || (!name.empty() && target != name) || !entry.is_regular_file(error)) continue;
    if (fs::remove(entry.path(), error)) ++removed;
  }
  return removed;
}

FolderLock::FolderLock(const std::string& folder, const std::string& purpose) {
  fd_ = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  SSM_CHECK(fd_ >= 0, "cannot open folder '{}': {}", folder, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd_);
    SSM_CHECK(error != EWOULDBLOCK, "'{}' is in use by another process ({})", folder, purpose);
    fail("cannot lock folder '{}': {}", folder, std::strerror(error));
  }
}

FolderLock::~FolderLock() { ::close(fd_); }

std::shared_ptr<Storage> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  SSM_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    fail("'{}' is not a regular file", path);
  }
  const size_t bytes = size_t(info.st_size);
  void* data = nullptr;
  if (bytes > 0) {
    data = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      ::close(fd);
      fail("cannot map '{}': {}", path, std::strerror(errno));
    }
  }
  ::close(fd);
  return std::make_shared<Storage>(data, bytes, Device::CPU, [bytes](void* p) {
    if (p) ::munmap(p, bytes);
  });
}

void release_mapped_pages(const Tensor& mapped) {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(mapped.raw()), end = begin + mapped.nbytes();
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;  // whole pages inside
  if (first < last) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace ssm
