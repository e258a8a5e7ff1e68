#include "core/file_util.h"

#include <fcntl.h>
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

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SSM_CHECK(in.good(), "cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  SSM_CHECK(!in.bad(), "cannot read '{}'", path);
  return buffer.str();
}

void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::string tmp_path = path + ".tmp" + std::to_string(::getpid());
  try {
    write(tmp_path);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp_path, ignored);
    throw;
  }
  std::error_code error;
  std::filesystem::rename(tmp_path, path, error);
  if (error) {
    std::filesystem::remove(tmp_path, error);
    fail("cannot write '{}': {}", path, error.message());
  }
}

void write_text_file(const std::string& path, const std::string& text) {
  write_atomically(path, [&](const std::string& tmp_path) {
    std::ofstream out(tmp_path, std::ios::binary);
    SSM_CHECK(out.good(), "cannot create '{}': {}", tmp_path, std::strerror(errno));
    out.write(text.data(), std::streamsize(text.size()));
    out.close();
    SSM_CHECK(out.good(), "cannot write '{}'", tmp_path);
  });
}

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
