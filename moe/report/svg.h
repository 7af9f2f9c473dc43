// Dependency-free SVG charts for training reports: line charts (loss curves, per-domain losses,
// load balance over steps) and heatmaps (expert load, domain x expert routing). The output is
// standalone SVG 1.1 text; WriteSvg stores it atomically.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moe::report {

struct Series {
  std::string name;       // legend entry; empty = left out of the legend
  std::vector<double> x;  // [n]
  std::vector<double> y;  // [n]
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_y = false;  // log10 y axis; points with y <= 0 are skipped like NaN
  int width = 720;     // pixels, 200..10000
  int height = 420;    // pixels, 150..10000
};

// Axes with "nice" ticks (1, 2, 5 x 10^k; decades on a log axis), grid, axis labels, title and a
// legend to the right. A point whose x or y is not finite is skipped and breaks its line: each run
// of consecutive plotted points is one <polyline class="series">, a run of a single point one
// <circle class="series">. A chart with no plottable point (no series, empty or all-NaN series) is
// a valid SVG with a frame and the words "no data", so a report never fails for lack of a metric.
// Throws moe::Error when a series' x and y differ in length or the size is out of range.
std::string RenderLineChart(const LineChart& chart);

// A matrix of values drawn as coloured cells, row 0 at the top, column 0 at the left, with row and
// column labels (thinned out when they would overlap), a colour bar legend and a <title> tooltip
// per cell. Colours follow the perceptually uniform viridis ramp from vmin (dark purple) to vmax
// (yellow); a NaN cell is light grey.
//
// Layouts used by the training reports:
//  - expert load over training: one heatmap per layer, rows = experts (e0 at the top), columns =
//    training-step buckets (early at the left), value = the expert's share of the bucket's
//    assignments (a balanced layer is a flat colour at 1/E);
//  - routing specialisation: rows = domains, columns = experts, value = RoutingSummary::share.
struct Heatmap {
  std::string title, x_label, y_label;
  std::string value_label;              // caption of the colour bar
  std::vector<std::string> row_labels;  // [R]
  std::vector<std::string> col_labels;  // [C]
  std::vector<double> values;           // [R, C] row-major
  std::optional<double> vmin, vmax;     // colour range; default: min and max finite value
  int width = 720;                      // pixels, 200..10000; the height follows from R
};

// Zero rows or columns give a "no data" chart; values.size() != R*C throws moe::Error.
std::string RenderHeatmap(const Heatmap& map);

// Text for XML content and attribute values: & < > " ' become entities; control characters other
// than tab/newline and bytes that are not valid UTF-8 become '?'.
std::string XmlEscape(std::string_view text);

// Viridis colour "#rrggbb" for t in [0, 1] (clamped; NaN gives the NaN grey), interpolated
// linearly between nine samples of matplotlib's table.
std::string RampColor(double t);

// Writes an SVG document atomically (temporary file + fsync + rename); throws moe::Error.
void WriteSvg(const std::string& path, std::string_view svg);

}  // namespace moe::report
