#include "core/npy.h"

#include <charconv>
#include <cstring>
#include <regex>

#include "core/file_util.h"

namespace ssm {

namespace {
const char kMagic[] = "\x93NUMPY";
// NumPy's own reading limit (numpy.load's max_header_size); it also bounds std::regex, which recurses per
// character and would overflow the stack on a header of megabytes.
constexpr size_t kMaxHeaderBytes = 10000;

bool dtype_from_descr(const std::string& descr, DType* out) {
  if (descr == "<i4") *out = DType::I32;
  else if (descr == "<i8") *out = DType::I64;
  else if (descr == "<f4") *out = DType::F32;
  else return false;
  return true;
}

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::I32: return "<i4";
    case DType::I64: return "<i8";
    case DType::F32: return "<f4";
    default: return nullptr;
  }
}
}  // namespace

Tensor read_npy(const std::string& path) {
  const std::string bytes = read_text_file(path);
  SSM_CHECK(bytes.size() >= 10 && bytes.compare(0, 6, kMagic, 6) == 0, "'{}' is not a .npy file (bad magic)",
            path);
  const int major = uint8_t(bytes[6]);
  SSM_CHECK(major >= 1 && major <= 3, "'{}': unsupported .npy version {}", path, major);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = uint8_t(bytes[8]) | (size_t(uint8_t(bytes[9])) << 8);
    header_start = 10;
  } else {
    SSM_CHECK(bytes.size() >= 12, "'{}': truncated .npy header", path);
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | uint8_t(bytes[8 + i]);
    header_start = 12;
  }
  SSM_CHECK(header_len <= kMaxHeaderBytes, "'{}': .npy header of {} bytes is longer than NumPy's limit ({})", path,
            header_len, kMaxHeaderBytes);
  SSM_CHECK(header_start + header_len <= bytes.size(), "'{}': truncated .npy header", path);
  const std::string header = bytes.substr(header_start, header_len);

  // Compiled once: compiling them took most of the time of reading a small file.
  static const std::regex descr_field(R"('descr'\s*:\s*'([^']*)')");
  static const std::regex fortran_field(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_field(R"('shape'\s*:\s*\(([^)]*)\))");
  static const std::regex number(R"(\s*(\d+)\s*(,|$))");
  std::smatch match;
  SSM_CHECK(std::regex_search(header, match, descr_field),
            "'{}': .npy header has no descr", path);
  DType dtype;
  SSM_CHECK(dtype_from_descr(match[1].str(), &dtype),
            "'{}': unsupported .npy dtype '{}' (int32, int64 and float32 little-endian are read)", path,
            match[1].str());
  SSM_CHECK(std::regex_search(header, match, fortran_field),
            "'{}': .npy header has no fortran_order", path);
  SSM_CHECK(match[1].str() == "False", "'{}': Fortran-ordered .npy arrays are not supported", path);
  SSM_CHECK(std::regex_search(header, match, shape_field),
            "'{}': .npy header has no shape", path);
  Shape shape;
  const std::string dims = match[1].str();
  size_t consumed = 0;
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    SSM_CHECK(size_t(it->position()) == consumed, "'{}': bad .npy shape ({})", path, dims);
    const std::string digits = (*it)[1].str();
    int64_t extent = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), extent);
    SSM_CHECK(error == std::errc() && end == digits.data() + digits.size(), "'{}': .npy extent {} is too large",
              path, digits);
    shape.push_back(extent);
    consumed = size_t(it->position() + it->length());
  }
  SSM_CHECK(dims.find_first_not_of(" ,", consumed) == std::string::npos, "'{}': bad .npy shape ({})", path, dims);

  const size_t data_start = header_start + header_len;
  const std::optional<int64_t> nbytes = checked_nbytes(shape, dtype);
  SSM_CHECK(nbytes, "'{}': .npy shape ({}) is too large", path, dims);
  const size_t expected = size_t(*nbytes);
  SSM_CHECK(bytes.size() - data_start == expected, "'{}': shape {} needs {} data bytes but the file has {}", path,
            shape_str(shape), expected, bytes.size() - data_start);
  Tensor tensor = Tensor::empty(shape, dtype);
  if (expected) std::memcpy(tensor.raw(), bytes.data() + data_start, expected);
  return tensor;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  const char* descr = descr_of(tensor.dtype());
  SSM_CHECK(descr != nullptr, "write_npy('{}'): dtype {} cannot be written", path, dtype_name(tensor.dtype()));
  std::string shape;
  for (int64_t extent : tensor.shape()) shape += std::to_string(extent) + ", ";
  if (tensor.dim() > 1) shape.resize(shape.size() - 1);  // (2, 3) but (5,)
  if (tensor.dim() > 1) shape.pop_back();
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  const Tensor dense = tensor.contiguous();
  write_atomically(path, [&](OutputFile& out) {
    out.write(kMagic, 6);
    const char version_and_length[4] = {1, 0, char(header.size() & 0xff), char(header.size() >> 8)};
    out.write(version_and_length, 4);
    out.write(header);
    out.write(dense.raw(), dense.nbytes());
  });
}

}  // namespace ssm
