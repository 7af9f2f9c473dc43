// The Jinja-subset interpreter: ~60 small templates (expressions, filters, tests, loops, scoping,
// whitespace control) compared with what Python jinja2 renders (tests/data/chat/unit.cases.json
// from scripts/gen_chat_goldens.py), then errors with positions and the limits.
#include "moe/chat/jinja.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "moe/core/error.h"
#include "moe/testing/compare.h"

namespace moe::chat {
namespace {

using json = nlohmann::ordered_json;

json Unit() {
  std::ifstream in(std::string(MOE_TEST_DATA_DIR) + "/chat/unit.cases.json", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

RenderOptions FixedNow() {
  RenderOptions o;
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 8;
  tm.tm_min = 9;
  tm.tm_sec = 10;
  tm.tm_wday = 5;  // a Friday
  tm.tm_yday = 207;
  o.now = tm;
  return o;
}

std::string Render(const std::string& src, const Value& vars = Value(),
                   const RenderOptions& o = FixedNow()) {
  return Template::Parse(src, "t").Render(vars, o);
}

using moe::testing::ErrorOf;

std::string RenderError(const std::string& src, const Value& vars = Value()) {
  return ErrorOf([&] { Render(src, vars); });
}

TEST(Jinja, MatchesJinja2OnUnitTemplates) {
  const json doc = Unit();
  const Value vars = Value::FromJson(doc["vars"]);
  ASSERT_GE(doc["cases"].size(), 50u);
  for (const json& c : doc["cases"]) {
    const std::string src = c["template"];
    SCOPED_TRACE(src);
    std::string got;
    const std::string err = ErrorOf([&] { got = Render(src, vars); });
    EXPECT_EQ(err, "(no error)");
    EXPECT_EQ(got, c["expected"].get<std::string>());
  }
}

TEST(Jinja, ErrorsWhereJinja2Errors) {
  const json doc = Unit();
  const Value vars = Value::FromJson(doc["vars"]);
  for (const json& c : doc["errors"]) {
    const std::string src = c["template"];
    SCOPED_TRACE(src);
    const std::string err = ErrorOf([&] { Render(src, vars); });
    EXPECT_EQ(err.rfind("[chat] t:1:", 0), 0u) << err;
  }
  EXPECT_NE(RenderError("{{ raise_exception('custom message') }}")
                .find("raise_exception: custom message"),
            std::string::npos);
  EXPECT_NE(RenderError("{{ missing.attr }}").find("'missing' is undefined"), std::string::npos);
  EXPECT_NE(RenderError("{{ 'a' + 1 }}").find("can only concatenate str (not \"int\") to str"),
            std::string::npos);
  EXPECT_NE(RenderError("{{ 1 // 0 }}").find("division or modulo by zero"), std::string::npos);
}

TEST(Jinja, ErrorPositions) {
  EXPECT_EQ(RenderError("line one\n  {{ x | nosuch }}"), "[chat] t:2:8: unknown filter 'nosuch'");
  EXPECT_EQ(RenderError("{% if true %}\n\n   {{ 1 +\n 'a' }}{% endif %}"),
            "[chat] t:3:9: unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_EQ(RenderError("{% for x in y %}"),
            "[chat] t:1:17: unexpected end of template, expected 'else' or 'endfor'");
  EXPECT_EQ(RenderError("ok\n{% endfor %}"), "[chat] t:2:4: unexpected 'endfor'");
  EXPECT_EQ(RenderError("{% frobnicate %}"),
            "[chat] t:1:4: unknown or unsupported tag 'frobnicate'");
  EXPECT_EQ(RenderError("{{ 'abc }}"), "[chat] t:1:4: unterminated string literal");
  EXPECT_EQ(RenderError("{{ (1 }}"), "[chat] t:1:7: unexpected '}'");
  EXPECT_EQ(RenderError("{{ (1 "), "[chat] t:1:1: unclosed '{{' (missing '}}')");
  EXPECT_EQ(RenderError("{{ 1 ] }}"), "[chat] t:1:6: unexpected ']'");
  EXPECT_EQ(RenderError("{# open"), "[chat] t:1:1: unclosed comment (missing '#}')");
  EXPECT_EQ(RenderError("{% if %}{% endif %}"), "[chat] t:1:7: unexpected '%}'");
  EXPECT_EQ(RenderError("{{ }}"), "[chat] t:1:4: unexpected '}}'");
  EXPECT_EQ(RenderError("{{ x is }}"), "[chat] t:1:9: expected a test name, got '}}'");
  EXPECT_EQ(RenderError("{% break %}"), "[chat] t:1:4: 'break' outside of a loop");
  EXPECT_EQ(RenderError("{{ a $ b }}"), "[chat] t:1:6: unexpected character '$'");
  EXPECT_EQ(RenderError("{% set x.y = 1 %}", Value()),
            "[chat] t:1:4: cannot assign attribute 'y' on 'x': not a namespace");
  EXPECT_EQ(RenderError("{% set a, b = [1] %}"),
            "[chat] t:1:4: cannot unpack 1 values into 2 names");
  EXPECT_EQ(RenderError("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"),
            "[chat] t:1:35: macro 'm' takes 1 arguments (2 given)");
}

TEST(Jinja, Limits) {
  RenderOptions o = FixedNow();
  o.max_output_bytes = 1000;
  EXPECT_NE(ErrorOf([&] {
              Render("{% for i in range(100) %}0123456789x{% endfor %}", Value(), o);
            }).find("output exceeds 1000 bytes"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              Render(
                  "{% set ns = namespace(s='ab') %}{% for i in range(20) %}{% set ns.s = ns.s + "
                  "ns.s %}{% endfor %}",
                  Value(), o);
            }).find("string too long"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { Render("{{ 'x' * 100000 }}", Value(), o); }).find("too long"),
            std::string::npos);
  o = FixedNow();
  o.max_steps = 10000;
  EXPECT_NE(ErrorOf([&] {
              Render("{% for i in range(100) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                     Value(), o);
            }).find("exceeded 10000 steps"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { Render("{{ range(100000000000) }}", Value(), o); }).find("too long"),
            std::string::npos);
  EXPECT_NE(RenderError("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
                .find("macro calls nested deeper than 64"),
            std::string::npos);
  // Deep nesting is refused by the parser, not a stack overflow.
  EXPECT_NE(RenderError("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
                .find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(RenderError("{{ " + std::string(5000, '-') + "1 }}").find("nested too deeply"),
            std::string::npos);
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  EXPECT_NE(RenderError(ifs).find("nested too deeply"), std::string::npos);
  EXPECT_NE(RenderError("{{ 9223372036854775807 + 1 }}").find("integer overflow"),
            std::string::npos);
  EXPECT_NE(RenderError("{{ 99999999999999999999 }}").find("out of range"), std::string::npos);
}

TEST(Jinja, ValuesFromJsonKeepKeyOrder) {
  const Value v = Value::FromJson(
      json::parse(R"({"z": 1, "a": [true, null, 2.5, "s"], "m": {"y": {}, "b": []}})"));
  EXPECT_EQ(
      Render("{{ v|tojson }}|{{ v }}", Value::MakeDict(Dict{{{Value::Str("v"), v}}})),
      R"({"z": 1, "a": [true, null, 2.5, "s"], "m": {"y": {}, "b": []}}|{'z': 1, 'a': [True, None, 2.5, 's'], 'm': {'y': {}, 'b': []}})");
}

TEST(Jinja, StrftimeNowUsesTheGivenTime) {
  EXPECT_EQ(Render("{{ strftime_now('%d %b %Y') }}"), "26 Jul 2024");
  // Without a fixed time it formats the current one.
  EXPECT_EQ(Template::Parse("{{ strftime_now('%Y')|length }}", "t").Render(Value()), "4");
}

TEST(Jinja, TemplateIsReusableAndThreadCompatible) {
  const Template t = Template::Parse(
      "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ "
      "ns.n }}",
      "t");
  EXPECT_EQ(t.Render(Value()), "3");
  EXPECT_EQ(t.Render(Value()), "3");  // namespaces are per render
}

}  // namespace
}  // namespace moe::chat
