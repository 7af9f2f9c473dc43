// SVG charts: well-formed XML (checked by a small parser here), element counts, escaping, NaN
// handling, empty charts, colours, and atomic writes.
#include "moe/report/svg.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe::report {
namespace {

namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Checks that `xml` is one well-formed element tree: tags balanced and nested, attribute values
// quoted, '&' only in the five predefined entities, no '<' in text. Returns the number of elements
// per tag name; fails the test (and returns what it has) on the first problem.
std::map<std::string, int> ParseXml(const std::string& xml) {
  std::map<std::string, int> counts;
  std::vector<std::string> stack;
  int roots = 0;
  size_t i = 0;
  auto check_entities = [&](size_t begin, size_t end) {
    for (size_t k = begin; k < end; ++k) {
      if (xml[k] != '&') continue;
      const size_t semi = xml.find(';', k);
      const std::string ent = xml.substr(k, semi == std::string::npos ? 1 : semi - k + 1);
      EXPECT_TRUE(ent == "&amp;" || ent == "&lt;" || ent == "&gt;" || ent == "&quot;" ||
                  ent == "&apos;")
          << "bad entity " << ent;
    }
  };
  while (i < xml.size()) {
    if (xml[i] != '<') {
      const size_t next = xml.find('<', i);
      const size_t end = next == std::string::npos ? xml.size() : next;
      check_entities(i, end);
      if (stack.empty()) {
        EXPECT_EQ(xml.substr(i, end - i).find_first_not_of(" \n\t\r"), std::string::npos)
            << "text outside the root element";
      }
      i = end;
      continue;
    }
    if (xml.compare(i, 2, "<?") == 0) {
      const size_t end = xml.find("?>", i);
      EXPECT_NE(end, std::string::npos);
      EXPECT_EQ(roots, 0) << "declaration after the root";
      if (end == std::string::npos) return counts;
      i = end + 2;
      continue;
    }
    if (xml.compare(i, 2, "</") == 0) {
      const size_t end = xml.find('>', i);
      if (end == std::string::npos) {
        ADD_FAILURE() << "unterminated end tag";
        return counts;
      }
      const std::string name = xml.substr(i + 2, end - i - 2);
      if (stack.empty() || stack.back() != name) {
        ADD_FAILURE() << "</" << name << "> does not close "
                      << (stack.empty() ? "anything" : stack.back());
        return counts;
      }
      stack.pop_back();
      i = end + 1;
      continue;
    }
    // Start tag: name, then attributes name="value" up to '>' or '/>'.
    size_t k = i + 1;
    while (k < xml.size() && (std::isalnum(static_cast<unsigned char>(xml[k])) || xml[k] == '-')) {
      ++k;
    }
    const std::string name = xml.substr(i + 1, k - i - 1);
    if (name.empty()) {
      ADD_FAILURE() << "bad tag at " << i;
      return counts;
    }
    bool self_closing = false;
    while (true) {
      while (k < xml.size() && xml[k] == ' ') ++k;
      if (k >= xml.size()) {
        ADD_FAILURE() << "unterminated <" << name;
        return counts;
      }
      if (xml[k] == '>') break;
      if (xml.compare(k, 2, "/>") == 0) {
        self_closing = true;
        ++k;
        break;
      }
      const size_t eq = xml.find('=', k);
      if (eq == std::string::npos || xml[eq + 1] != '"') {
        ADD_FAILURE() << "unquoted attribute in <" << name;
        return counts;
      }
      const size_t close = xml.find('"', eq + 2);
      const std::string value = xml.substr(eq + 2, close - eq - 2);
      EXPECT_EQ(value.find('<'), std::string::npos);
      check_entities(eq + 2, close);
      k = close + 1;
    }
    if (stack.empty()) ++roots;
    ++counts[name];
    if (!self_closing) stack.push_back(name);
    i = k + 1;
  }
  EXPECT_TRUE(stack.empty()) << "unclosed <" << (stack.empty() ? "" : stack.back()) << ">";
  EXPECT_EQ(roots, 1);
  return counts;
}

int Count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t pos = s.find(needle); pos != std::string::npos; pos = s.find(needle, pos + 1)) ++n;
  return n;
}

TEST(XmlChecker, RejectsBrokenDocuments) {
  EXPECT_NONFATAL_FAILURE(ParseXml("<svg><g></svg>"), "does not close");
  EXPECT_NONFATAL_FAILURE(ParseXml("<svg><text>a & b</text></svg>"), "bad entity");
  EXPECT_NONFATAL_FAILURE(ParseXml("<svg>"), "unclosed");
}

TEST(LineChart, WellFormedWithOnePolylinePerSeriesAndALegend) {
  LineChart c;
  c.title = "training loss";
  c.x_label = "step";
  c.y_label = "loss (nats)";
  for (int k = 0; k < 3; ++k) {
    Series s{"domain " + std::to_string(k), {}, {}};
    for (int i = 0; i <= 100; ++i) {
      s.x.push_back(i * 10);
      s.y.push_back(5.5 * std::exp(-i / (20.0 + k)) + 0.3 * k);
    }
    c.series.push_back(s);
  }
  const std::string svg = RenderLineChart(c);
  auto n = ParseXml(svg);
  EXPECT_EQ(n["svg"], 1);
  EXPECT_EQ(n["polyline"], 3);
  EXPECT_EQ(n["circle"], 0);
  EXPECT_EQ(Count(svg, "class=\"series\""), 3);
  for (const char* text : {"training loss", ">step<", "loss (nats)", "domain 0", "domain 2"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
  EXPECT_NE(svg.find(">1000<"), std::string::npos);  // x ticks reach the last step
  EXPECT_NE(svg.find(">0<"), std::string::npos);
}

TEST(LineChart, NaNPointsAreSkippedAndBreakTheLine) {
  LineChart c;
  c.series.push_back({"loss", {0, 1, 2, 3, 4, 5, 6, 7}, {1, 2, kNaN, 3, 4, kNaN, 5, kNaN}});
  c.series.push_back({"", {0, kNaN, 2}, {1, 1, 1}});  // unnamed: not in the legend
  const std::string svg = RenderLineChart(c);
  auto n = ParseXml(svg);
  EXPECT_EQ(n["polyline"], 2);  // {0, 1}, {3, 4}
  EXPECT_EQ(n["circle"], 3);    // {6} of the first series, {0} and {2} of the second
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(Count(svg, "stroke-width=\"3\""), 1);  // one legend entry
}

TEST(LineChart, LogAxisHasDecadeTicksAndSkipsNonPositiveValues) {
  LineChart c;
  c.log_y = true;
  c.series.push_back({"lr", {0, 1, 2, 3, 4}, {1e-3, 1e-2, 0, 1.0, -5}});
  const std::string svg = RenderLineChart(c);
  auto n = ParseXml(svg);
  EXPECT_EQ(n["polyline"], 1);
  EXPECT_EQ(n["circle"], 1);
  for (const char* tick : {">0.001<", ">0.01<", ">0.1<", ">1<"}) {
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  }
}

TEST(LineChart, NoPlottablePointGivesAnEmptyChart) {
  LineChart none;
  none.title = "empty";
  LineChart nan = none;
  nan.series.push_back({"a", {0, 1}, {kNaN, kNaN}});
  LineChart empty = none;
  empty.series.push_back({"a", {}, {}});
  for (const LineChart& c : {none, nan, empty}) {
    const std::string svg = RenderLineChart(c);
    auto n = ParseXml(svg);
    EXPECT_EQ(n["polyline"] + n["circle"], 0);
    EXPECT_NE(svg.find(">no data<"), std::string::npos);
    EXPECT_NE(svg.find(">empty<"), std::string::npos);
  }
}

TEST(LineChart, SinglePointAndConstantSeriesStillGetAnAxis) {
  LineChart c;
  c.series.push_back({"one", {3}, {2}});
  c.series.push_back({"flat", {3, 3}, {2, 2}});
  const std::string svg = RenderLineChart(c);
  auto n = ParseXml(svg);
  EXPECT_EQ(n["circle"], 1);
  EXPECT_EQ(n["polyline"], 1);
  EXPECT_GE(Count(svg, "<line "), 4);  // grid lines
}

TEST(LineChart, BadInputsThrow) {
  LineChart c;
  c.series.push_back({"a", {0, 1, 2}, {1, 2}});
  EXPECT_THROW(RenderLineChart(c), Error);
  c.series[0].y.push_back(3);
  c.width = 10;
  EXPECT_THROW(RenderLineChart(c), Error);
}

TEST(Escape, XmlSpecialsControlsAndInvalidUtf8) {
  EXPECT_EQ(XmlEscape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
  EXPECT_EQ(XmlEscape("tab\tok\x01\x1f"), "tab\tok??");
  EXPECT_EQ(XmlEscape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(XmlEscape("\xff\xc3(\xe2\x82"),
            "??"
            "(??");                                         // split: "??(" is a trigraph
  EXPECT_EQ(XmlEscape("\xc0\xaf \xed\xa0\x80"), "?? ???");  // overlong, surrogate

  LineChart c;
  c.title = "<script>&amp;\x02";
  c.series.push_back({"a<&>b \xfe", {0, 1}, {0, 1}});
  const std::string svg = RenderLineChart(c);
  ParseXml(svg);
  EXPECT_NE(svg.find("&lt;script&gt;&amp;amp;?"), std::string::npos);
  EXPECT_NE(svg.find("a&lt;&amp;&gt;b ?"), std::string::npos);
}

TEST(Ramp, ViridisEndsAndMiddleAndNaN) {
  EXPECT_EQ(RampColor(0), "#440154");
  EXPECT_EQ(RampColor(0.5), "#26828e");
  EXPECT_EQ(RampColor(1), "#fde725");
  EXPECT_EQ(RampColor(-3), "#440154");
  EXPECT_EQ(RampColor(7), "#fde725");
  EXPECT_EQ(RampColor(kNaN), "#d9d9d9");
  EXPECT_EQ(RampColor(1.0 / 16), "#461566");  // halfway between #440154 and #482878
}

Heatmap Load() {
  Heatmap h;
  h.title = "layer 0 expert load";
  h.x_label = "step";
  h.y_label = "expert";
  h.value_label = "share";
  h.row_labels = {"e0", "e1", "e2"};
  h.col_labels = {"0", "100", "200", "300"};
  h.values = {0.1, 0.2, 0.3, 0.4, 0.5, kNaN, 0.6, 0.7, 0.2, 0.2, 0.1, 0.0};
  return h;
}

TEST(Heatmap, OneCellPerValueWithTheRampAndALegend) {
  const Heatmap h = Load();
  const std::string svg = RenderHeatmap(h);
  auto n = ParseXml(svg);
  EXPECT_EQ(Count(svg, "class=\"cell\""), 12);
  EXPECT_EQ(Count(svg, "class=\"colorbar\""), 1);
  EXPECT_EQ(n["stop"], 9);
  EXPECT_EQ(Count(svg, "fill=\"#440154\""), 1);  // the 0.0 cell
  EXPECT_EQ(Count(svg, "fill=\"#fde725\""), 1);  // the 0.7 cell
  EXPECT_EQ(Count(svg, "fill=\"#d9d9d9\""), 1);  // the NaN cell
  EXPECT_NE(svg.find("e1 / 100: no value"), std::string::npos);
  EXPECT_NE(svg.find("e2 / 300: 0<"), std::string::npos);
  for (const char* text : {">e0<", ">e2<", ">300<", ">share<", ">0.7<", ">0.35<"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
}

TEST(Heatmap, FixedRangeClampsAndManyCellsThinTheLabels) {
  Heatmap h = Load();
  h.vmin = 0.2;
  h.vmax = 0.4;
  const std::string svg = RenderHeatmap(h);
  ParseXml(svg);
  EXPECT_EQ(Count(svg, "fill=\"#440154\""), 6);  // 0.0, 0.1 (x2), 0.2 (x3): at or below vmin
  Heatmap big;
  for (int r = 0; r < 64; ++r) big.row_labels.push_back("expert " + std::to_string(r));
  for (int c = 0; c < 200; ++c) big.col_labels.push_back(std::to_string(c * 50));
  big.values.assign(64 * 200, 0.5);
  const std::string bsvg = RenderHeatmap(big);
  auto n = ParseXml(bsvg);
  EXPECT_EQ(Count(bsvg, "class=\"cell\""), 64 * 200);
  EXPECT_LT(n["text"], 64 + 200);  // labels thinned
  EXPECT_GT(n["text"], 10);
}

TEST(Heatmap, EmptyAndMismatchedInputs) {
  Heatmap h;
  h.title = "nothing yet";
  const std::string svg = RenderHeatmap(h);
  ParseXml(svg);
  EXPECT_NE(svg.find(">no data<"), std::string::npos);
  Heatmap bad = Load();
  bad.values.pop_back();
  EXPECT_THROW(RenderHeatmap(bad), Error);
  bad = Load();
  bad.vmin = 1;
  bad.vmax = 0;
  EXPECT_THROW(RenderHeatmap(bad), Error);
}

TEST(WriteSvg, WritesAtomicallyAndReportsBadPaths) {
  std::string tmpl = (fs::temp_directory_path() / "moe_svg_XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const fs::path dir = tmpl;
  const std::string path = (dir / "chart.svg").string();
  const std::string svg = RenderHeatmap(Load());
  WriteSvg(path, "old");
  WriteSvg(path, svg);
  std::ifstream in(path, std::ios::binary);
  std::stringstream got;
  got << in.rdbuf();
  EXPECT_EQ(got.str(), svg);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);  // no temporary file left behind
  const std::string bad = (dir / "missing" / "chart.svg").string();
  try {
    WriteSvg(bad, svg);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace moe::report
