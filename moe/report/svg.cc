#include "moe/report/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "moe/core/error.h"
#include "moe/io/file.h"

namespace moe::report {
namespace {

constexpr std::string_view kTag = "svg";
constexpr std::string_view kNanColor = "#d9d9d9";
constexpr std::string_view kFrameColor = "#444444";
constexpr std::string_view kGridColor = "#e6e6e6";
constexpr double kCharWidth = 7.0;  // rough advance of one character at font-size 12
constexpr size_t kMaxPoints = size_t{10} << 20;

// matplotlib's viridis at t = 0, 1/8, ..., 1.
constexpr std::array<std::array<int, 3>, 9> kViridis = {{
    {68, 1, 84},
    {72, 40, 120},
    {62, 73, 137},
    {49, 104, 142},
    {38, 130, 142},
    {31, 158, 137},
    {53, 183, 121},
    {110, 206, 88},
    {253, 231, 37},
}};

// Tableau 10: distinct colours for up to ten series, then repeated.
constexpr std::array<std::string_view, 10> kPalette = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                                       "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                                       "#bcbd22", "#17becf"};

// Length of the valid UTF-8 sequence starting at s[i] (a byte >= 0x80), or 0 if invalid.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

std::string Num(double v) { return fmt::format("{:.2f}", v); }

std::string Header(int width, int height) {
  return fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      width, height);
}

// <text> at (x, y); anchor is start, middle or end; extra is appended to the attributes.
std::string Text(double x, double y, std::string_view text, std::string_view anchor,
                 std::string_view extra = "") {
  return fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"{}\"{}{}>{}</text>\n", Num(x), Num(y),
                     anchor, extra.empty() ? "" : " ", extra, XmlEscape(text));
}

std::string Title(int width, std::string_view title) {
  if (title.empty()) return "";
  return Text(width / 2.0, 22, title, "middle", "font-size=\"15\" font-weight=\"bold\"");
}

std::string NoData(int width, int height, std::string_view title) {
  std::string s = Header(width, height) + Title(width, title);
  s += fmt::format(
      "<rect class=\"frame\" x=\"40\" y=\"40\" width=\"{}\" height=\"{}\" fill=\"none\" "
      "stroke=\"{}\"/>\n",
      width - 80, height - 80, kFrameColor);
  s += Text(width / 2.0, height / 2.0, "no data", "middle", "fill=\"#888888\"");
  return s + "</svg>\n";
}

void CheckSize(int width, int height) {
  MOE_CHECK(width >= 200 && width <= 10000 && height >= 150 && height <= 10000, kTag,
            "chart size {}x{} is outside 200..10000 x 150..10000", width, height);
}

size_t DisplayWidth(std::string_view s) {  // code points
  size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// An axis over [lo, hi] with ticks; `log` axes hold log10 of the values.
struct Axis {
  double lo = 0, hi = 1, step = 1;
  bool log = false;
  std::vector<double> ticks;

  double Frac(double v) const { return (v - lo) / (hi - lo); }
  std::string Label(double v) const {
    if (log) return fmt::format("{:g}", std::pow(10.0, v));
    if (v == 0) return "0";
    if (std::abs(v) >= 1e6 || std::abs(v) < 1e-4) return fmt::format("{:.3g}", v);
    const int decimals = std::clamp(static_cast<int>(-std::floor(std::log10(step) + 1e-9)), 0, 10);
    return fmt::format("{:.{}f}", v, decimals);
  }
};

// "Nice" ticks 1, 2 or 5 x 10^k apart covering [lo, hi], about `target` of them.
Axis LinearAxis(double lo, double hi, int target) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  MOE_CHECK(std::isfinite(hi - lo), kTag, "values [{}, {}] span too wide a range to plot", lo, hi);
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  Axis a;
  a.step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  a.lo = std::floor(lo / a.step) * a.step;
  a.hi = std::ceil(hi / a.step) * a.step;
  if (!(a.hi > a.lo)) a.hi = a.lo + a.step;  // the range is below the resolution of doubles
  for (int i = 0; i <= 4 * target; ++i) {
    const double v = a.lo + i * a.step;
    if (v > a.hi + a.step * 1e-9) break;
    a.ticks.push_back(std::abs(v) < a.step * 1e-9 ? 0.0 : v);
  }
  return a;
}

// Decade ticks over [log10 lo, log10 hi].
Axis LogAxis(double log_lo, double log_hi) {
  Axis a;
  a.log = true;
  a.lo = std::floor(log_lo);
  a.hi = std::ceil(log_hi);
  if (a.hi <= a.lo) a.hi = a.lo + 1;
  const double stride = std::max(1.0, std::ceil((a.hi - a.lo) / 8));
  for (double v = a.lo; v <= a.hi; v += stride) a.ticks.push_back(v);
  a.step = stride;
  return a;
}

}  // namespace

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t n = Utf8Length(text, i);
      if (n == 0) {
        out += '?';
        ++i;
      } else {
        out.append(text.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c < 0x20 && c != '\t' && c != '\n' && c != '\r' ? '?' : static_cast<char>(c);
    }
    ++i;
  }
  return out;
}

std::string RampColor(double t) {
  if (std::isnan(t)) return std::string(kNanColor);
  const double pos = std::clamp(t, 0.0, 1.0) * 8.0;
  const int i = std::min(static_cast<int>(pos), 7);
  const double f = pos - i;
  std::array<int, 3> rgb{};
  for (size_t k = 0; k < 3; ++k) {
    const double a = kViridis[static_cast<size_t>(i)][k];
    const double b = kViridis[static_cast<size_t>(i) + 1][k];
    rgb[k] = static_cast<int>(std::lround(a + (b - a) * f));
  }
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

std::string RenderLineChart(const LineChart& chart) {
  CheckSize(chart.width, chart.height);
  const auto plotted = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!chart.log_y || y > 0);
  };
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  size_t legend_chars = 0;
  for (const Series& s : chart.series) {
    MOE_CHECK(s.x.size() == s.y.size(), kTag, "series '{}' has {} x values but {} y values", s.name,
              s.x.size(), s.y.size());
    MOE_CHECK(s.x.size() <= kMaxPoints, kTag, "series '{}' has {} points, more than {}", s.name,
              s.x.size(), kMaxPoints);
    legend_chars = std::max(legend_chars, std::min<size_t>(DisplayWidth(s.name), 40));
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!plotted(s.x[i], s.y[i])) continue;
      const double y = chart.log_y ? std::log10(s.y[i]) : s.y[i];
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  if (!(x_lo <= x_hi)) return NoData(chart.width, chart.height, chart.title);

  const Axis xa = LinearAxis(x_lo, x_hi, 6);
  const Axis ya = chart.log_y ? LogAxis(y_lo, y_hi) : LinearAxis(y_lo, y_hi, 5);
  size_t y_label_chars = 1;
  for (const double t : ya.ticks) y_label_chars = std::max(y_label_chars, ya.Label(t).size());

  const double left = 24 + (chart.y_label.empty() ? 0 : 18) + kCharWidth * y_label_chars;
  const double right = legend_chars > 0 ? 44 + kCharWidth * legend_chars : 24;
  const double top = chart.title.empty() ? 16 : 40;
  const double bottom = chart.x_label.empty() ? 30 : 50;
  const double px0 = left, px1 = chart.width - right, py0 = top, py1 = chart.height - bottom;
  MOE_CHECK(px1 - px0 >= 40 && py1 - py0 >= 40, kTag,
            "chart {}x{} leaves no room to plot beside its labels", chart.width, chart.height);
  const auto sx = [&](double x) { return px0 + xa.Frac(x) * (px1 - px0); };
  const auto sy = [&](double y) { return py1 - ya.Frac(y) * (py1 - py0); };

  std::string s = Header(chart.width, chart.height) + Title(chart.width, chart.title);
  // Grid and tick labels.
  for (const double t : xa.ticks) {
    s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"{3}\"/>\n",
                     Num(sx(t)), Num(py0), Num(py1), kGridColor);
    s += Text(sx(t), py1 + 16, xa.Label(t), "middle");
  }
  for (const double t : ya.ticks) {
    s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\"/>\n",
                     Num(px0), Num(sy(t)), Num(px1), kGridColor);
    s += Text(px0 - 6, sy(t) + 4, ya.Label(t), "end");
  }
  s += fmt::format(
      "<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
      "stroke=\"{}\"/>\n",
      Num(px0), Num(py0), Num(px1 - px0), Num(py1 - py0), kFrameColor);
  if (!chart.x_label.empty()) {
    s += Text((px0 + px1) / 2, chart.height - 12, chart.x_label, "middle");
  }
  if (!chart.y_label.empty()) {
    s += Text(0, 0, chart.y_label, "middle",
              fmt::format("transform=\"translate(16,{}) rotate(-90)\"", Num((py0 + py1) / 2)));
  }

  // Series: one polyline per run of plotted points.
  int legend_row = 0;
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& ser = chart.series[k];
    const std::string_view color = kPalette[k % kPalette.size()];
    std::string points;
    int run = 0;
    const auto flush = [&] {
      if (run == 1) {
        const size_t comma = points.find(',');
        s += fmt::format("<circle class=\"series\" cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{}\"/>\n",
                         points.substr(0, comma), points.substr(comma + 1), color);
      } else if (run > 1) {
        s += fmt::format(
            "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" "
            "stroke-linejoin=\"round\" points=\"{}\"/>\n",
            color, points);
      }
      points.clear();
      run = 0;
    };
    for (size_t i = 0; i < ser.x.size(); ++i) {
      if (!plotted(ser.x[i], ser.y[i])) {
        flush();
        continue;
      }
      const double y = chart.log_y ? std::log10(ser.y[i]) : ser.y[i];
      if (run > 0) points += ' ';
      points += fmt::format("{},{}", Num(sx(ser.x[i])), Num(sy(y)));
      ++run;
    }
    flush();
    if (!ser.name.empty()) {
      const double ly = py0 + 8 + 18 * legend_row++;
      s += fmt::format(
          "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>\n",
          Num(px1 + 12), Num(ly), Num(px1 + 30), Num(ly), color);
      s += Text(px1 + 36, ly + 4, ser.name, "start");
    }
  }
  return s + "</svg>\n";
}

std::string RenderHeatmap(const Heatmap& map) {
  const size_t rows = map.row_labels.size(), cols = map.col_labels.size();
  MOE_CHECK(rows * cols <= size_t{1} << 20, kTag, "heatmap of {} x {} cells is too large", rows,
            cols);
  MOE_CHECK(map.values.size() == rows * cols, kTag,
            "heatmap has {} values for {} rows x {} columns", map.values.size(), rows, cols);
  CheckSize(map.width, 150);
  if (rows == 0 || cols == 0) return NoData(map.width, 200, map.title);

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const double v : map.values) {
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (!(lo <= hi)) lo = 0, hi = 1;  // no finite value: every cell is grey anyway
  if (map.vmin) lo = *map.vmin;
  if (map.vmax) hi = *map.vmax;
  MOE_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, kTag,
            "colour range [{}, {}] is not a finite interval", lo, hi);
  const auto frac = [&](double v) { return hi > lo ? (v - lo) / (hi - lo) : 0.5; };

  size_t row_chars = 1, col_chars = 1;
  for (const auto& l : map.row_labels) row_chars = std::max(row_chars, DisplayWidth(l));
  for (const auto& l : map.col_labels) col_chars = std::max(col_chars, DisplayWidth(l));
  row_chars = std::min<size_t>(row_chars, 32);
  const double left = 16 + (map.y_label.empty() ? 0 : 18) + kCharWidth * row_chars;
  const double right = 110;  // colour bar and its labels
  const double top = map.title.empty() ? 24 : 44;
  const double plot_w = map.width - left - right;
  MOE_CHECK(plot_w >= 40, kTag, "heatmap width {} leaves no room beside labels", map.width);
  const double cell_w = plot_w / static_cast<double>(cols);
  const double cell_h = std::clamp(360.0 / static_cast<double>(rows), 3.0, 24.0);
  const double plot_h = cell_h * static_cast<double>(rows);
  const double bar_h = std::max(plot_h, 120.0);
  const double bottom = 28 + (map.x_label.empty() ? 0 : 20);
  const int height = static_cast<int>(std::ceil(top + bar_h + bottom));

  std::string s = Header(map.width, height) + Title(map.width, map.title);
  s += "<g shape-rendering=\"crispEdges\">\n";
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const double v = map.values[r * cols + c];
      const std::string value = std::isnan(v) ? "no value" : fmt::format("{:.4g}", v);
      s += fmt::format(
          "<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">"
          "<title>{}</title></rect>\n",
          Num(left + cell_w * static_cast<double>(c)), Num(top + cell_h * static_cast<double>(r)),
          Num(cell_w), Num(cell_h), RampColor(std::isnan(v) ? v : frac(v)),
          XmlEscape(fmt::format("{} / {}: {}", map.row_labels[r], map.col_labels[c], value)));
    }
  }
  s += "</g>\n";
  s += fmt::format(
      "<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
      "stroke=\"{}\"/>\n",
      Num(left), Num(top), Num(plot_w), Num(plot_h), kFrameColor);

  // Labels, thinned so they do not overlap: rows 14 px apart, columns by their width.
  const auto row_step = static_cast<size_t>(std::ceil(14.0 / cell_h));
  for (size_t r = 0; r < rows; r += row_step) {
    s += Text(left - 6, top + cell_h * (static_cast<double>(r) + 0.5) + 4,
              map.row_labels[r].substr(0, 64), "end");
  }
  const auto col_step =
      static_cast<size_t>(std::ceil((kCharWidth * static_cast<double>(col_chars) + 8) / cell_w));
  for (size_t c = 0; c < cols; c += col_step) {
    s += Text(left + cell_w * (static_cast<double>(c) + 0.5), top + plot_h + 16, map.col_labels[c],
              "middle");
  }
  if (!map.x_label.empty()) s += Text(left + plot_w / 2, height - 8, map.x_label, "middle");
  if (!map.y_label.empty()) {
    s += Text(0, 0, map.y_label, "middle",
              fmt::format("transform=\"translate(16,{}) rotate(-90)\"", Num(top + plot_h / 2)));
  }

  // Colour bar: the ramp from lo (bottom) to hi (top), with the same nine stops RampColor uses.
  const double bx = left + plot_w + 20;
  s += "<defs><linearGradient id=\"moe-ramp\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (size_t i = 0; i < kViridis.size(); ++i) {
    s += fmt::format("<stop offset=\"{}\" stop-color=\"{}\"/>", Num(i / 8.0), RampColor(i / 8.0));
  }
  s += "</linearGradient></defs>\n";
  s += fmt::format(
      "<rect class=\"colorbar\" x=\"{}\" y=\"{}\" width=\"14\" height=\"{}\" "
      "fill=\"url(#moe-ramp)\" stroke=\"{}\"/>\n",
      Num(bx), Num(top), Num(bar_h), kFrameColor);
  s += Text(bx + 20, top + 10, fmt::format("{:.3g}", hi), "start");
  s += Text(bx + 20, top + bar_h / 2 + 4, fmt::format("{:.3g}", (lo + hi) / 2), "start");
  s += Text(bx + 20, top + bar_h, fmt::format("{:.3g}", lo), "start");
  if (!map.value_label.empty()) {
    s += Text(bx + 80, top + bar_h / 2, map.value_label, "middle",
              fmt::format("transform=\"rotate(90,{},{})\"", Num(bx + 80), Num(top + bar_h / 2)));
  }
  return s + "</svg>\n";
}

void WriteSvg(const std::string& path, std::string_view svg) { io::WriteFileAtomic(path, svg); }

}  // namespace moe::report
