#include "train/loss_plot.h"

#include <png.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>

#include "core/error.h"
#include "core/file_util.h"

namespace ssm {

namespace {

struct Rgb {
  uint8_t r, g, b;
};

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * size_t(h) * 3, 255) {}
  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void line(double x0, double y0, double x1, double y1, Rgb c, int thick = 1) {
    const int n = int(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= n; ++i) {
      const double t = n ? double(i) / n : 0.0;
      const int x = int(std::lround(x0 + (x1 - x0) * t)), y = int(std::lround(y0 + (y1 - y0) * t));
      for (int dx = 0; dx < thick; ++dx)
        for (int dy = 0; dy < thick; ++dy) set(x + dx - thick / 2, y + dy - thick / 2, c);
    }
  }
  void dot(double x, double y, Rgb c, int r) {
    for (int dx = -r; dx <= r; ++dx)
      for (int dy = -r; dy <= r; ++dy)
        if (dx * dx + dy * dy <= r * r) set(int(std::lround(x)) + dx, int(std::lround(y)) + dy, c);
  }
  // 5x7 glyphs, scaled by 2.
  void text(int x, int y, const std::string& s, Rgb c) {
    static const std::map<char, std::array<uint8_t, 7>> font = {
        {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},      {'2', {14, 17, 1, 2, 4, 8, 31}},
        {'3', {31, 2, 4, 2, 1, 17, 14}},     {'4', {2, 6, 10, 18, 31, 2, 2}},     {'5', {31, 16, 30, 1, 1, 17, 14}},
        {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},       {'8', {14, 17, 17, 14, 17, 17, 14}},
        {'9', {14, 17, 17, 15, 1, 2, 12}},   {'.', {0, 0, 0, 0, 0, 12, 12}},      {'-', {0, 0, 0, 31, 0, 0, 0}},
        {'a', {0, 0, 14, 1, 15, 17, 15}},    {'e', {0, 0, 14, 17, 31, 16, 14}},   {'i', {4, 0, 12, 4, 4, 4, 14}},
        {'l', {12, 4, 4, 4, 4, 4, 14}},      {'n', {0, 0, 22, 25, 17, 17, 17}},   {'o', {0, 0, 14, 17, 17, 17, 14}},
        {'p', {0, 0, 30, 17, 30, 16, 16}},   {'r', {0, 0, 22, 25, 16, 16, 16}},   {'s', {0, 0, 15, 16, 14, 1, 30}},
        {'t', {8, 8, 28, 8, 8, 9, 6}},       {'v', {0, 0, 17, 17, 17, 10, 4}},    {'k', {16, 16, 18, 20, 24, 20, 18}},
        {'m', {0, 0, 26, 21, 21, 17, 17}},   {'(', {2, 4, 8, 8, 8, 4, 2}},        {')', {8, 4, 2, 2, 2, 4, 8}},
        {'x', {0, 0, 17, 10, 4, 10, 17}},    {'b', {16, 16, 22, 25, 17, 17, 30}}, {'g', {0, 0, 15, 17, 15, 1, 14}},
        {'c', {0, 0, 14, 16, 16, 17, 14}},   {'h', {16, 16, 22, 25, 17, 17, 17}}, {'u', {0, 0, 17, 17, 17, 19, 13}},
        {'d', {1, 1, 13, 19, 17, 17, 15}}};
    for (char ch : s) {
      auto it = font.find(ch);
      if (it != font.end())
        for (int row = 0; row < 7; ++row)
          for (int col = 0; col < 5; ++col)
            if (it->second[size_t(row)] & (16 >> col))
              for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 2; ++b) set(x + col * 2 + a, y + row * 2 + b, c);
      x += 12;
    }
  }
  // Encodes the PNG in memory (libpng reports errors by longjmp, which must not cross C++ frames
  // that own resources), then writes it atomically.
  void write(const std::string& path) const {
    std::string png_bytes;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      fail("cannot encode PNG '{}'", path);
    }
    png_set_write_fn(
        png, &png_bytes,
        [](png_structp p, png_bytep data, png_size_t n) {
          static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
        },
        [](png_structp) {});
    png_set_IHDR(png, info, png_uint_32(w_), png_uint_32(h_), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h_; ++y) png_write_row(png, const_cast<png_bytep>(&px_[size_t(y) * size_t(w_) * 3]));
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    write_text_file(path, png_bytes);
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

std::string label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, std::abs(v) >= 100 ? "%.0f" : "%.2f", v);
  return buf;
}

}  // namespace

void write_loss_plot(const std::string& path, const LossCurve& curve, int width, int height) {
  Canvas c(width, height);
  const int left = 90, right = width - 20, top = 40, bottom = height - 50;
  double x_max = 1, y_min = INFINITY, y_max = -INFINITY;
  for (const auto* series : {&curve.train, &curve.val})
    for (const auto& [s, l] : *series) {
      if (!std::isfinite(l)) continue;
      x_max = std::max(x_max, s);
      y_min = std::min(y_min, l);
      y_max = std::max(y_max, l);
    }
  if (!std::isfinite(y_min)) y_min = 0, y_max = 1;
  if (y_max - y_min < 1e-9) y_max = y_min + 1;
  const double pad = 0.05 * (y_max - y_min);
  y_min -= pad;
  y_max += pad;
  auto X = [&](double s) { return left + (right - left) * s / x_max; };
  auto Y = [&](double l) { return bottom - (bottom - top) * (l - y_min) / (y_max - y_min); };
  const Rgb axis{60, 60, 60}, grid{225, 225, 225}, light{170, 200, 235}, dark{30, 90, 180}, red{210, 50, 40};
  for (int i = 0; i <= 4; ++i) {
    const double l = y_min + (y_max - y_min) * i / 4.0;
    c.line(left, Y(l), right, Y(l), grid);
    c.text(8, int(Y(l)) - 7, label(l), axis);
  }
  c.line(left, top, left, bottom, axis);
  c.line(left, bottom, right, bottom, axis);
  c.text(left - 6, bottom + 12, "0", axis);
  const std::string xm = label(x_max);
  c.text(right - 12 * int(xm.size()), bottom + 12, xm, axis);
  c.text((left + right) / 2 - 24, bottom + 28, "step", axis);
  // Train: raw (light) and running mean over ~1% of the steps (dark).
  const auto& tr = curve.train;
  for (size_t i = 1; i < tr.size(); ++i)
    if (std::isfinite(tr[i - 1].second) && std::isfinite(tr[i].second))
      c.line(X(tr[i - 1].first), Y(tr[i - 1].second), X(tr[i].first), Y(tr[i].second), light);
  const size_t win = std::max<size_t>(1, tr.size() / 100);
  double sum = 0;
  std::vector<std::pair<double, double>> smooth;
  for (size_t i = 0; i < tr.size(); ++i) {
    sum += std::isfinite(tr[i].second) ? tr[i].second : 0;
    if (i >= win) sum -= std::isfinite(tr[i - win].second) ? tr[i - win].second : 0;
    smooth.emplace_back(tr[i].first, sum / double(std::min(i + 1, win)));
  }
  for (size_t i = 1; i < smooth.size(); ++i)
    c.line(X(smooth[i - 1].first), Y(smooth[i - 1].second), X(smooth[i].first), Y(smooth[i].second), dark, 2);
  const auto& va = curve.val;
  for (size_t i = 0; i < va.size(); ++i) {
    if (i) c.line(X(va[i - 1].first), Y(va[i - 1].second), X(va[i].first), Y(va[i].second), red, 2);
    c.dot(X(va[i].first), Y(va[i].second), red, 3);
  }
  // Legend.
  c.line(right - 300, 18, right - 275, 18, dark, 2);
  c.text(right - 266, 11, "train loss", axis);
  c.dot(right - 120, 18, red, 3);
  c.text(right - 108, 11, "val loss", axis);
  c.write(path);
}

}  // namespace ssm
