#include "moe/chat/jinja_builtins.h"

#include <fmt/format.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <unordered_map>

#include "moe/tokenizer/unicode.h"

namespace moe::chat::detail {
namespace {

std::vector<uint32_t> Cps(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = tokenizer::DecodeUtf8(s, i);
    out.push_back(c.valid ? c.cp : static_cast<unsigned char>(s[i]) | 0x80000000u);
    i += c.len;
  }
  return out;
}

std::string FromCps(const std::vector<uint32_t>& cps, size_t b, size_t e) {
  std::string out;
  for (size_t i = b; i < e; ++i) {
    if (cps[i] & 0x80000000u) {
      out += static_cast<char>(cps[i] & 0xff);
    } else {
      tokenizer::AppendUtf8(cps[i], out);
    }
  }
  return out;
}

std::string MapCase(std::string_view s, int mode /*0 lower, 1 upper*/) {
  std::vector<uint32_t> cps = Cps(s);
  for (auto& c : cps) {
    if (c & 0x80000000u) continue;
    c = static_cast<uint32_t>(mode == 1 ? u_toupper(static_cast<UChar32>(c))
                                        : u_tolower(static_cast<UChar32>(c)));
  }
  return FromCps(cps, 0, cps.size());
}

std::string Title(std::string_view s) {
  std::vector<uint32_t> cps = Cps(s);
  bool prev_cased = false;
  for (auto& c : cps) {
    if (c & 0x80000000u) {
      prev_cased = false;
      continue;
    }
    const bool cased = u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CASED);
    c = static_cast<uint32_t>(prev_cased ? u_tolower(static_cast<UChar32>(c))
                                         : u_totitle(static_cast<UChar32>(c)));
    prev_cased = cased;
  }
  return FromCps(cps, 0, cps.size());
}

std::string Capitalize(std::string_view s) {
  std::vector<uint32_t> cps = Cps(s);
  for (size_t i = 0; i < cps.size(); ++i) {
    if (cps[i] & 0x80000000u) continue;
    const auto c = static_cast<UChar32>(cps[i]);
    cps[i] = static_cast<uint32_t>(i == 0 ? u_totitle(c) : u_tolower(c));
  }
  return FromCps(cps, 0, cps.size());
}

const std::string& RequireStr(const Value& v, std::string_view what) {
  if (!v.is_string())
    throw EvalError(fmt::format("{} expects a string, got {}", what, v.TypeName()));
  return v.str();
}

int64_t RequireInt(const Value& v, std::string_view what) {
  if (!v.is_int() && !v.is_bool())
    throw EvalError(fmt::format("{} expects an integer, got {}", what, v.TypeName()));
  return v.int_value();
}

// Python str.strip/lstrip/rstrip(chars).
std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::vector<uint32_t> cps = Cps(s);
  std::vector<uint32_t> set;
  const bool custom = !chars.is_undefined() && !chars.is_none();
  if (custom) set = Cps(RequireStr(chars, "strip"));
  auto strip = [&](uint32_t c) {
    if (custom) return std::find(set.begin(), set.end(), c) != set.end();
    return !(c & 0x80000000u) && IsPySpace(c);
  };
  size_t b = 0;
  size_t e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  return FromCps(cps, b, e);
}

Value Split(const std::string& s, const Value& sep, const Value& maxsplit_v) {
  int64_t maxsplit =
      maxsplit_v.is_undefined() || maxsplit_v.is_none() ? -1 : RequireInt(maxsplit_v, "split");
  List out;
  if (sep.is_undefined() || sep.is_none()) {
    const std::vector<uint32_t> cps = Cps(s);
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && !(cps[i] & 0x80000000u) && IsPySpace(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && !(cps[e - 1] & 0x80000000u) && IsPySpace(cps[e - 1])) --e;
        out.push_back(Value::Str(FromCps(cps, i, e)));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !(!(cps[j] & 0x80000000u) && IsPySpace(cps[j]))) ++j;
      out.push_back(Value::Str(FromCps(cps, i, j)));
      i = j;
    }
    return Value::MakeList(std::move(out));
  }
  const std::string& d = RequireStr(sep, "split");
  if (d.empty()) throw EvalError("empty separator");
  size_t pos = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    const size_t f = s.find(d, pos);
    if (f == std::string::npos) break;
    out.push_back(Value::Str(s.substr(pos, f - pos)));
    pos = f + d.size();
  }
  out.push_back(Value::Str(s.substr(pos)));
  return Value::MakeList(std::move(out));
}

std::string Replace(const std::string& s, const std::string& a, const std::string& b,
                    int64_t count) {
  std::string out;
  if (a.empty()) {
    // Python inserts b between every character (and at both ends).
    const auto offs = CodepointOffsets(s);
    int64_t n = 0;
    for (size_t i = 0; i + 1 < offs.size(); ++i) {
      if (count < 0 || n < count) {
        out += b;
        ++n;
      }
      out.append(s, offs[i], offs[i + 1] - offs[i]);
    }
    if (count < 0 || n < count) out += b;
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t f = s.find(a, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += b;
    pos = f + a.size();
    ++n;
  }
  out.append(s, pos);
  return out;
}

bool PrefixMatch(const std::string& s, const Value& p, bool suffix) {
  auto one = [&](const Value& v) {
    const std::string& x = RequireStr(v, suffix ? "endswith" : "startswith");
    if (x.size() > s.size()) return false;
    return suffix ? s.compare(s.size() - x.size(), x.size(), x) == 0
                  : s.compare(0, x.size(), x) == 0;
  };
  if (p.is_list()) {
    for (const Value& v : p.list()) {
      if (one(v)) return true;
    }
    return false;
  }
  return one(p);
}

Value Method(const Value& self, std::string name, NativeFn fn) {
  (void)self;
  return Value::Function(std::move(name), std::move(fn));
}

Value StrMethod(const Value& obj, const std::string& name) {
  const std::string s = obj.str();
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool l = name != "rstrip";
    const bool r = name != "lstrip";
    return Method(obj, name, [s, l, r, name](CallArgs& a) {
      a.Check(name, {"chars"});
      return Value::Str(Strip(s, a.Get(0, "chars"), l, r));
    });
  }
  if (name == "split") {
    return Method(obj, name, [s](CallArgs& a) {
      a.Check("split", {"sep", "maxsplit"});
      return Split(s, a.Get(0, "sep"), a.Get(1, "maxsplit"));
    });
  }
  if (name == "startswith" || name == "endswith") {
    const bool suffix = name == "endswith";
    return Method(obj, name, [s, suffix, name](CallArgs& a) {
      a.Check(name, {"prefix"});
      return Value::Bool(PrefixMatch(s, a.Get(0, "prefix"), suffix));
    });
  }
  if (name == "upper" || name == "lower") {
    const int mode = name == "upper" ? 1 : 0;
    return Method(obj, name, [s, mode, name](CallArgs& a) {
      a.Check(name, {});
      return Value::Str(MapCase(s, mode));
    });
  }
  if (name == "title" || name == "capitalize") {
    const bool title = name == "title";
    return Method(obj, name, [s, title, name](CallArgs& a) {
      a.Check(name, {});
      return Value::Str(title ? Title(s) : Capitalize(s));
    });
  }
  if (name == "replace") {
    return Method(obj, name, [s](CallArgs& a) {
      a.Check("replace", {"old", "new", "count"});
      const Value c = a.Get(2, "count");
      return Value::Str(Replace(s, RequireStr(a.Get(0, "old"), "replace"),
                                RequireStr(a.Get(1, "new"), "replace"),
                                c.is_undefined() ? -1 : RequireInt(c, "replace")));
    });
  }
  if (name == "find" || name == "count") {
    const bool find = name == "find";
    return Method(obj, name, [s, find, name](CallArgs& a) {
      a.Check(name, {"sub"});
      const std::string& sub = RequireStr(a.Get(0, "sub"), name);
      if (find) {
        const size_t f = s.find(sub);
        if (f == std::string::npos) return Value::Int(-1);
        return Value::Int(static_cast<int64_t>(CodepointOffsets(s.substr(0, f)).size() - 1));
      }
      if (sub.empty()) return Value::Int(static_cast<int64_t>(CodepointOffsets(s).size()));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::Int(n);
    });
  }
  if (name == "join") {
    return Method(obj, name, [s](CallArgs& a) {
      a.Check("join", {"iterable"});
      std::string out;
      bool first = true;
      for (const Value& v : Iterate(a.Get(0, "iterable"))) {
        if (!first) out += s;
        first = false;
        out += RequireStr(v, "join");
      }
      return Value::Str(std::move(out));
    });
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" ||
      name == "islower" || name == "isupper") {
    return Method(obj, name, [s, name](CallArgs& a) {
      a.Check(name, {});
      const std::vector<uint32_t> cps = Cps(s);
      if (cps.empty()) return Value::Bool(false);
      if (name == "islower" || name == "isupper") {
        bool cased = false;
        for (uint32_t c : cps) {
          if (c & 0x80000000u) continue;
          const auto u = static_cast<UChar32>(c);
          if (name == "islower" ? u_isupper(u) || u_istitle(u) : u_islower(u) || u_istitle(u))
            return Value::Bool(false);
          cased = cased || (name == "islower" ? u_islower(u) : u_isupper(u));
        }
        return Value::Bool(cased);
      }
      for (uint32_t c : cps) {
        if (c & 0x80000000u) return Value::Bool(false);
        const auto u = static_cast<UChar32>(c);
        const bool ok = name == "isdigit"   ? u_isdigit(u)
                        : name == "isspace" ? IsPySpace(c)
                        : name == "isalpha" ? u_isalpha(u)
                                            : (u_isalnum(u) != 0);
        if (!ok) return Value::Bool(false);
      }
      return Value::Bool(true);
    });
  }
  return Value::Undefined(name);
}

Value DictMethod(const Value& obj, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values") {
    return Method(obj, name, [obj, name](CallArgs& a) {
      a.Check(name, {});
      List out;
      for (const auto& [k, v] : obj.dict().items) {
        if (name == "items") {
          out.push_back(Value::MakeTuple({k, v}));
        } else {
          out.push_back(name == "keys" ? k : v);
        }
      }
      return Value::MakeList(std::move(out));
    });
  }
  if (name == "get") {
    return Method(obj, name, [obj](CallArgs& a) {
      a.Check("get", {"key", "default"});
      const Value* v = obj.dict().Find(a.Get(0, "key"));
      if (v != nullptr) return *v;
      const Value d = a.Get(1, "default");
      return d.is_undefined() ? Value::None() : d;
    });
  }
  return Value();
}

// Dotted attribute path ("function.name") as selectattr/map/sort/join use it.
Value AttrPath(const Value& v, const Value& attr) {
  if (attr.is_int()) return GetItem(v, attr);
  const std::string& path = RequireStr(attr, "attribute");
  Value cur = v;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string part =
        path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        })) {
      cur = GetItem(cur, Value::Int(std::stoll(part)));
    } else {
      cur = GetItem(cur, Value::Str(part));
    }
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

CallArgs Rest(const CallArgs& a, size_t from) {
  CallArgs r;
  for (size_t i = from; i < a.pos.size(); ++i) r.pos.push_back(a.pos[i]);
  r.kw = a.kw;
  return r;
}

bool RunTest(const Value& v, const Value& name, const CallArgs& args) {
  const std::string& n = RequireStr(name, "test name");
  TestFn t = FindTest(n);
  if (t == nullptr) throw EvalError(fmt::format("unknown test '{}'", n));
  return t(v, args);
}

// --- filters ---------------------------------------------------------------------------------

Value FLength(const Value& v, const CallArgs& a) {
  a.Check("length", {});
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return Value::Int(0);
    case Value::Kind::kString:
      return Value::Int(static_cast<int64_t>(CodepointOffsets(v.str()).size() - 1));
    case Value::Kind::kList:
      return Value::Int(static_cast<int64_t>(v.list().size()));
    case Value::Kind::kDict:
      return Value::Int(static_cast<int64_t>(v.dict().items.size()));
    case Value::Kind::kNamespace:
      return Value::Int(static_cast<int64_t>(v.ns().items.size()));
    default:
      throw EvalError(fmt::format("object of type '{}' has no len()", v.TypeName()));
  }
}

Value FTrim(const Value& v, const CallArgs& a) {
  a.Check("trim", {"chars"});
  return Value::Str(Strip(v.Str(), a.Get(0, "chars"), true, true));
}
Value FUpper(const Value& v, const CallArgs& a) {
  a.Check("upper", {});
  return Value::Str(MapCase(v.Str(), 1));
}
Value FLower(const Value& v, const CallArgs& a) {
  a.Check("lower", {});
  return Value::Str(MapCase(v.Str(), 0));
}
Value FCapitalize(const Value& v, const CallArgs& a) {
  a.Check("capitalize", {});
  return Value::Str(Capitalize(v.Str()));
}
Value FTitle(const Value& v, const CallArgs& a) {
  a.Check("title", {});
  return Value::Str(Title(v.Str()));
}
Value FString(const Value& v, const CallArgs& a) {
  a.Check("string", {});
  return Value::Str(v.Str());
}
Value FSafe(const Value& v, const CallArgs& a) {
  a.Check("safe", {});
  return v;
}
Value FToJson(const Value& v, const CallArgs& a) {
  a.Check("tojson", {"indent"});
  const Value ind = a.Get(0, "indent");
  int indent = -1;
  if (!ind.is_undefined() && !ind.is_none()) {
    indent = static_cast<int>(std::clamp<int64_t>(RequireInt(ind, "tojson indent"), 0, 64));
  }
  return Value::Str(v.ToJson(indent));
}
Value FJoin(const Value& v, const CallArgs& a) {
  a.Check("join", {"d", "attribute"});
  const Value d = a.Get(0, "d");
  const std::string sep = d.is_undefined() ? "" : d.Str();
  const Value attr = a.Get(1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& item : Iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += (attr.is_undefined() ? item : AttrPath(item, attr)).Str();
  }
  return Value::Str(std::move(out));
}
Value FFirst(const Value& v, const CallArgs& a) {
  a.Check("first", {});
  const List items = Iterate(v);
  return items.empty() ? Value::Undefined("first") : items.front();
}
Value FLast(const Value& v, const CallArgs& a) {
  a.Check("last", {});
  const List items = Iterate(v);
  return items.empty() ? Value::Undefined("last") : items.back();
}
Value FDefault(const Value& v, const CallArgs& a) {
  a.Check("default", {"default_value", "boolean"});
  Value d = a.Get(0, "default_value");
  if (d.is_undefined()) d = Value::Str("");
  const bool boolean = a.Get(1, "boolean").Truthy();
  if (v.is_undefined() || (boolean && !v.Truthy())) return d;
  return v;
}
Value FItems(const Value& v, const CallArgs& a) {
  a.Check("items", {});
  if (v.is_undefined()) return Value::MakeList({});
  if (!v.is_dict() && !v.is_namespace())
    throw EvalError(fmt::format("items expects a mapping, got {}", v.TypeName()));
  List out;
  for (const auto& [k, x] : (v.is_dict() ? v.dict() : v.ns()).items)
    out.push_back(Value::MakeTuple({k, x}));
  return Value::MakeList(std::move(out));
}
Value FList(const Value& v, const CallArgs& a) {
  a.Check("list", {});
  return Value::MakeList(Iterate(v));
}
Value FReplace(const Value& v, const CallArgs& a) {
  a.Check("replace", {"old", "new", "count"});
  const Value c = a.Get(2, "count");
  return Value::Str(Replace(v.Str(), a.Get(0, "old").Str(), a.Get(1, "new").Str(),
                            c.is_undefined() || c.is_none() ? -1 : RequireInt(c, "replace")));
}
Value SelectImpl(const Value& v, const CallArgs& a, bool by_attr, bool keep) {
  List out;
  const size_t first_test_arg = by_attr ? 1 : 0;
  const Value attr = by_attr ? a.Get(0, "attribute") : Value();
  if (by_attr && attr.is_undefined())
    throw EvalError("selectattr/rejectattr need an attribute name");
  const Value test = a.Get(first_test_arg, "test");
  const CallArgs test_args = Rest(a, first_test_arg + 1);
  for (const Value& item : Iterate(v)) {
    const Value x = by_attr ? AttrPath(item, attr) : item;
    const bool ok = test.is_undefined() ? x.Truthy() : RunTest(x, test, test_args);
    if (ok == keep) out.push_back(item);
  }
  return Value::MakeList(std::move(out));
}
Value FSelect(const Value& v, const CallArgs& a) { return SelectImpl(v, a, false, true); }
Value FReject(const Value& v, const CallArgs& a) { return SelectImpl(v, a, false, false); }
Value FSelectAttr(const Value& v, const CallArgs& a) { return SelectImpl(v, a, true, true); }
Value FRejectAttr(const Value& v, const CallArgs& a) { return SelectImpl(v, a, true, false); }
Value FMap(const Value& v, const CallArgs& a) {
  List out;
  const Value attr = a.Get(99, "attribute");
  if (!attr.is_undefined()) {
    const Value def = a.Get(99, "default");
    for (const Value& item : Iterate(v)) {
      Value x = AttrPath(item, attr);
      out.push_back(x.is_undefined() && !def.is_undefined() ? def : x);
    }
    return Value::MakeList(std::move(out));
  }
  if (a.pos.empty()) throw EvalError("map needs a filter name or attribute=");
  const std::string& name = RequireStr(a.pos[0], "map");
  FilterFn f = FindFilter(name);
  if (f == nullptr) throw EvalError(fmt::format("unknown filter '{}'", name));
  const CallArgs rest = Rest(a, 1);
  for (const Value& item : Iterate(v)) out.push_back(f(item, rest));
  return Value::MakeList(std::move(out));
}
Value FInt(const Value& v, const CallArgs& a) {
  a.Check("int", {"default", "base"});
  Value d = a.Get(0, "default");
  if (d.is_undefined()) d = Value::Int(0);
  if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
  if (v.is_float()) {
    if (!std::isfinite(v.number()) || std::fabs(v.number()) >= 9.2e18) return d;
    return Value::Int(static_cast<int64_t>(v.number()));
  }
  if (v.is_string()) {
    const std::string s = Strip(v.str(), Value(), true, true);
    const Value b = a.Get(1, "base");
    const int base = b.is_undefined() ? 10 : static_cast<int>(RequireInt(b, "int base"));
    if (base < 2 || base > 36) return d;
    errno = 0;
    char* end = nullptr;
    const long long x = std::strtoll(s.c_str(), &end, base);
    if (!s.empty() && errno == 0 && end == s.c_str() + s.size()) return Value::Int(x);
    const double f = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(f) && std::fabs(f) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(f));
    }
  }
  return d;
}
Value FFloat(const Value& v, const CallArgs& a) {
  a.Check("float", {"default"});
  Value d = a.Get(0, "default");
  if (d.is_undefined()) d = Value::Float(0.0);
  if (v.is_number()) return Value::Float(v.number());
  if (v.is_string()) {
    const std::string s = Strip(v.str(), Value(), true, true);
    char* end = nullptr;
    const double f = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return Value::Float(f);
  }
  return d;
}
Value FAbs(const Value& v, const CallArgs& a) {
  a.Check("abs", {});
  if (v.is_float()) return Value::Float(std::fabs(v.number()));
  if (v.is_int() || v.is_bool()) {
    if (v.int_value() == INT64_MIN) throw EvalError("integer overflow");
    return Value::Int(v.int_value() < 0 ? -v.int_value() : v.int_value());
  }
  throw EvalError(fmt::format("bad operand type for abs(): '{}'", v.TypeName()));
}
Value FRound(const Value& v, const CallArgs& a) {
  a.Check("round", {"precision", "method"});
  if (!v.is_number()) throw EvalError(fmt::format("round expects a number, got {}", v.TypeName()));
  const Value p = a.Get(0, "precision");
  const int64_t prec = p.is_undefined() ? 0 : std::clamp<int64_t>(RequireInt(p, "round"), -20, 20);
  const Value m = a.Get(1, "method");
  const std::string method = m.is_undefined() ? "common" : RequireStr(m, "round method");
  const double scale = std::pow(10.0, static_cast<double>(prec));
  double x = v.number() * scale;
  if (method == "common") {
    x = std::nearbyint(x);  // Python round(): halves to even
  } else if (method == "ceil") {
    x = std::ceil(x);
  } else if (method == "floor") {
    x = std::floor(x);
  } else {
    throw EvalError("round method must be 'common', 'ceil' or 'floor'");
  }
  return Value::Float(x / scale);
}
Value FReverse(const Value& v, const CallArgs& a) {
  a.Check("reverse", {});
  if (v.is_string()) {
    const auto cps = Cps(v.str());
    std::vector<uint32_t> r(cps.rbegin(), cps.rend());
    return Value::Str(FromCps(r, 0, r.size()));
  }
  List items = Iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::MakeList(std::move(items));
}
Value SortKey(const Value& item, const Value& attr, bool case_sensitive) {
  Value k = attr.is_undefined() || attr.is_none() ? item : AttrPath(item, attr);
  if (!case_sensitive && k.is_string()) k = Value::Str(MapCase(k.str(), 0));
  return k;
}
Value FSort(const Value& v, const CallArgs& a) {
  a.Check("sort", {"reverse", "case_sensitive", "attribute"});
  const bool reverse = a.Get(0, "reverse").Truthy();
  const bool cs = a.Get(1, "case_sensitive").Truthy();
  const Value attr = a.Get(2, "attribute");
  List items = Iterate(v);
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t i = 0; i < items.size(); ++i) keyed.emplace_back(SortKey(items[i], attr, cs), i);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? Compare(y.first, x.first) < 0 : Compare(x.first, y.first) < 0;
  });
  List out;
  for (const auto& [k, i] : keyed) out.push_back(items[i]);
  return Value::MakeList(std::move(out));
}
Value FUnique(const Value& v, const CallArgs& a) {
  a.Check("unique", {"case_sensitive", "attribute"});
  const bool cs = a.Get(0, "case_sensitive").Truthy();
  const Value attr = a.Get(1, "attribute");
  List out;
  List seen;
  for (const Value& item : Iterate(v)) {
    const Value k = SortKey(item, attr, cs);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return Equals(s, k); })) {
      seen.push_back(k);
      out.push_back(item);
    }
  }
  return Value::MakeList(std::move(out));
}
Value MinMax(const Value& v, const CallArgs& a, bool max) {
  a.Check(max ? "max" : "min", {"case_sensitive", "attribute"});
  const bool cs = a.Get(0, "case_sensitive").Truthy();
  const Value attr = a.Get(1, "attribute");
  const List items = Iterate(v);
  if (items.empty()) return Value::Undefined(max ? "max" : "min");
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    const int c = Compare(SortKey(items[i], attr, cs), SortKey(items[best], attr, cs));
    if (max ? c > 0 : c < 0) best = i;
  }
  return items[best];
}
Value FMax(const Value& v, const CallArgs& a) { return MinMax(v, a, true); }
Value FMin(const Value& v, const CallArgs& a) { return MinMax(v, a, false); }
Value FSum(const Value& v, const CallArgs& a) {
  a.Check("sum", {"attribute", "start"});
  const Value attr = a.Get(0, "attribute");
  Value start = a.Get(1, "start");
  bool is_float = start.is_float();
  int64_t si = start.is_undefined() ? 0 : (start.is_float() ? 0 : RequireInt(start, "sum"));
  double sf = start.is_float() ? start.number() : 0.0;
  for (const Value& item : Iterate(v)) {
    const Value x = attr.is_undefined() ? item : AttrPath(item, attr);
    if (x.is_float()) {
      if (!is_float) sf = static_cast<double>(si);
      is_float = true;
      sf += x.number();
    } else if (x.is_int() || x.is_bool()) {
      if (is_float) {
        sf += x.number();
      } else if (__builtin_add_overflow(si, x.int_value(), &si)) {
        throw EvalError("integer overflow");
      }
    } else {
      throw EvalError(
          fmt::format("unsupported operand type(s) for +: 'int' and '{}'", x.TypeName()));
    }
  }
  return is_float ? Value::Float(sf) : Value::Int(si);
}
Value FIndent(const Value& v, const CallArgs& a) {
  a.Check("indent", {"width", "first", "blank"});
  const Value w = a.Get(0, "width");
  const std::string pad =
      w.is_string() ? w.str()
                    : std::string(static_cast<size_t>(std::clamp<int64_t>(
                                      w.is_undefined() ? 4 : RequireInt(w, "indent"), 0, 1024)),
                                  ' ');
  const bool first = a.Get(1, "first").Truthy();
  const bool blank = a.Get(2, "blank").Truthy();
  const std::string s = v.Str();
  std::string out;
  size_t pos = 0;
  bool is_first = true;
  while (true) {
    const size_t nl = s.find('\n', pos);
    const std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if ((!is_first || first) && (blank || !line.empty())) out += pad;
    out += line;
    if (nl == std::string::npos) break;
    out += '\n';
    pos = nl + 1;
    is_first = false;
  }
  return Value::Str(std::move(out));
}
Value FAttr(const Value& v, const CallArgs& a) {
  a.Check("attr", {"name"});
  return GetAttr(v, RequireStr(a.Get(0, "name"), "attr"));
}
Value FWordcount(const Value& v, const CallArgs& a) {
  a.Check("wordcount", {});
  return Value::Int(static_cast<int64_t>(Split(v.Str(), Value(), Value()).list().size()));
}
Value FDictsort(const Value& v, const CallArgs& a) {
  a.Check("dictsort", {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) throw EvalError(fmt::format("dictsort expects a dict, got {}", v.TypeName()));
  const bool cs = a.Get(0, "case_sensitive").Truthy();
  const Value by = a.Get(1, "by");
  const bool by_value = by.is_string() && by.str() == "value";
  const bool reverse = a.Get(2, "reverse").Truthy();
  std::vector<std::pair<Value, Value>> items = v.dict().items;
  std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
    const int c = Compare(SortKey(by_value ? x.second : x.first, Value(), cs),
                          SortKey(by_value ? y.second : y.first, Value(), cs));
    return reverse ? c > 0 : c < 0;
  });
  List out;
  for (auto& [k, x] : items) out.push_back(Value::MakeTuple({k, x}));
  return Value::MakeList(std::move(out));
}

// --- tests -----------------------------------------------------------------------------------

bool TDefined(const Value& v, const CallArgs&) { return !v.is_undefined(); }
bool TUndefined(const Value& v, const CallArgs&) { return v.is_undefined(); }
bool TNone(const Value& v, const CallArgs&) { return v.is_none(); }
bool TString(const Value& v, const CallArgs&) { return v.is_string(); }
bool TNumber(const Value& v, const CallArgs&) { return v.is_number(); }
bool TInteger(const Value& v, const CallArgs&) { return v.is_int(); }
bool TFloat(const Value& v, const CallArgs&) { return v.is_float(); }
bool TBoolean(const Value& v, const CallArgs&) { return v.is_bool(); }
bool TTrue(const Value& v, const CallArgs&) { return v.is_bool() && v.bool_value(); }
bool TFalse(const Value& v, const CallArgs&) { return v.is_bool() && !v.bool_value(); }
bool TMapping(const Value& v, const CallArgs&) { return v.is_dict(); }
bool TIterable(const Value& v, const CallArgs&) {
  return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
}
bool TSequence(const Value& v, const CallArgs&) {
  return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
}
bool TCallable(const Value& v, const CallArgs&) { return v.is_callable(); }
bool TOdd(const Value& v, const CallArgs&) { return RequireInt(v, "odd") % 2 != 0; }
bool TEven(const Value& v, const CallArgs&) { return RequireInt(v, "even") % 2 == 0; }
bool TDivisibleBy(const Value& v, const CallArgs& a) {
  const int64_t d = RequireInt(a.Get(0, "num"), "divisibleby");
  if (d == 0) throw EvalError("integer division or modulo by zero");
  if (d == -1) return true;
  return RequireInt(v, "divisibleby") % d == 0;
}
bool TEq(const Value& v, const CallArgs& a) { return Equals(v, a.Get(0, "other")); }
bool TNe(const Value& v, const CallArgs& a) { return !Equals(v, a.Get(0, "other")); }
bool TLt(const Value& v, const CallArgs& a) { return Compare(v, a.Get(0, "other")) < 0; }
bool TLe(const Value& v, const CallArgs& a) { return Compare(v, a.Get(0, "other")) <= 0; }
bool TGt(const Value& v, const CallArgs& a) { return Compare(v, a.Get(0, "other")) > 0; }
bool TGe(const Value& v, const CallArgs& a) { return Compare(v, a.Get(0, "other")) >= 0; }
bool TLower(const Value& v, const CallArgs&) {
  return v.is_string() && MapCase(v.str(), 0) == v.str();
}
bool TUpper(const Value& v, const CallArgs&) {
  return v.is_string() && MapCase(v.str(), 1) == v.str();
}
bool TSameAs(const Value& v, const CallArgs& a) {
  const Value o = a.Get(0, "other");
  if (v.kind() != o.kind()) return false;
  if (v.is_none() || v.is_undefined()) return true;
  if (v.is_bool()) return v.bool_value() == o.bool_value();
  if (v.is_namespace()) return &v.ns() == &o.ns();
  return false;
}
bool TIn(const Value& v, const CallArgs& a) {
  const Value seq = a.Get(0, "seq");
  if (seq.is_string()) return seq.str().find(RequireStr(v, "in")) != std::string::npos;
  if (seq.is_dict()) return seq.dict().Find(v) != nullptr;
  for (const Value& x : Iterate(seq)) {
    if (Equals(x, v)) return true;
  }
  return false;
}
bool TEscaped(const Value&, const CallArgs&) { return false; }

}  // namespace

FilterFn FindFilter(std::string_view name) {
  static const std::unordered_map<std::string_view, FilterFn> kFilters = {
      {"abs", FAbs},
      {"attr", FAttr},
      {"capitalize", FCapitalize},
      {"count", FLength},
      {"d", FDefault},
      {"default", FDefault},
      {"dictsort", FDictsort},
      {"first", FFirst},
      {"float", FFloat},
      {"indent", FIndent},
      {"int", FInt},
      {"items", FItems},
      {"join", FJoin},
      {"last", FLast},
      {"length", FLength},
      {"list", FList},
      {"lower", FLower},
      {"map", FMap},
      {"max", FMax},
      {"min", FMin},
      {"reject", FReject},
      {"rejectattr", FRejectAttr},
      {"replace", FReplace},
      {"reverse", FReverse},
      {"round", FRound},
      {"safe", FSafe},
      {"select", FSelect},
      {"selectattr", FSelectAttr},
      {"sort", FSort},
      {"string", FString},
      {"sum", FSum},
      {"title", FTitle},
      {"tojson", FToJson},
      {"trim", FTrim},
      {"unique", FUnique},
      {"upper", FUpper},
      {"wordcount", FWordcount},
  };
  const auto it = kFilters.find(name);
  return it == kFilters.end() ? nullptr : it->second;
}

TestFn FindTest(std::string_view name) {
  static const std::unordered_map<std::string_view, TestFn> kTests = {
      {"defined", TDefined},
      {"undefined", TUndefined},
      {"none", TNone},
      {"string", TString},
      {"number", TNumber},
      {"integer", TInteger},
      {"float", TFloat},
      {"boolean", TBoolean},
      {"true", TTrue},
      {"false", TFalse},
      {"mapping", TMapping},
      {"iterable", TIterable},
      {"sequence", TSequence},
      {"callable", TCallable},
      {"odd", TOdd},
      {"even", TEven},
      {"divisibleby", TDivisibleBy},
      {"eq", TEq},
      {"equalto", TEq},
      {"==", TEq},
      {"ne", TNe},
      {"!=", TNe},
      {"lt", TLt},
      {"lessthan", TLt},
      {"<", TLt},
      {"le", TLe},
      {"<=", TLe},
      {"gt", TGt},
      {"greaterthan", TGt},
      {">", TGt},
      {"ge", TGe},
      {">=", TGe},
      {"lower", TLower},
      {"upper", TUpper},
      {"sameas", TSameAs},
      {"in", TIn},
      {"escaped", TEscaped},
  };
  const auto it = kTests.find(name);
  return it == kTests.end() ? nullptr : it->second;
}

Value GetAttr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      throw EvalError(obj.undefined_hint().empty()
                          ? fmt::format("undefined value has no attribute '{}'", name)
                          : fmt::format("'{}' is undefined", obj.undefined_hint()));
    case Value::Kind::kString:
      return StrMethod(obj, name);
    case Value::Kind::kDict: {
      Value m = DictMethod(obj, name);
      if (!m.is_undefined()) return m;
      const Value* v = obj.dict().Find(std::string_view(name));
      return v != nullptr ? *v : Value::Undefined(name);
    }
    case Value::Kind::kNamespace: {
      const Value* v = obj.ns().Find(std::string_view(name));
      return v != nullptr ? *v : Value::Undefined(name);
    }
    default:
      return Value::Undefined(name);
  }
}

Value GetItem(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      throw EvalError(obj.undefined_hint().empty()
                          ? std::string("undefined value is not subscriptable")
                          : fmt::format("'{}' is undefined", obj.undefined_hint()));
    case Value::Kind::kList:
    case Value::Kind::kString:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.int_value();
        if (obj.is_list()) {
          const int64_t n = static_cast<int64_t>(obj.list().size());
          if (i < 0) i += n;
          if (i < 0 || i >= n) return Value::Undefined();
          return obj.list()[static_cast<size_t>(i)];
        }
        const auto offs = CodepointOffsets(obj.str());
        const int64_t n = static_cast<int64_t>(offs.size()) - 1;
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::Undefined();
        const auto u = static_cast<size_t>(i);
        return Value::Str(obj.str().substr(offs[u], offs[u + 1] - offs[u]));
      }
      if (key.is_string()) return GetAttr(obj, key.str());
      return Value::Undefined();
    case Value::Kind::kDict: {
      const Value* v = obj.dict().Find(key);
      if (v != nullptr) return *v;
      if (key.is_string()) return GetAttr(obj, key.str());
      return Value::Undefined();
    }
    case Value::Kind::kNamespace: {
      const Value* v = obj.ns().Find(key);
      return v != nullptr ? *v : Value::Undefined();
    }
    default:
      return Value::Undefined();
  }
}

Value SliceValue(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (obj.is_undefined()) return GetItem(obj, Value());  // throws
  if (!obj.is_list() && !obj.is_string()) {
    throw EvalError(fmt::format("'{}' object is not subscriptable", obj.TypeName()));
  }
  const bool is_str = obj.is_string();
  std::vector<size_t> offs;
  if (is_str) offs = CodepointOffsets(obj.str());
  const int64_t n =
      is_str ? static_cast<int64_t>(offs.size()) - 1 : static_cast<int64_t>(obj.list().size());
  auto opt = [](const Value& v) { return v.is_undefined() || v.is_none(); };
  const int64_t step = opt(step_v) ? 1 : RequireInt(step_v, "slice step");
  if (step == 0) throw EvalError("slice step cannot be zero");
  auto clamp = [&](const Value& v, int64_t def) {
    if (opt(v)) return def;
    int64_t i = RequireInt(v, "slice index");
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  List items;
  std::string s;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    const auto u = static_cast<size_t>(i);
    if (is_str) {
      s.append(obj.str(), offs[u], offs[u + 1] - offs[u]);
    } else {
      items.push_back(obj.list()[u]);
    }
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  return is_str ? Value::Str(std::move(s)) : Value::MakeList(std::move(items));
}

List Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return v.list();
    case Value::Kind::kDict: {
      List keys;
      for (const auto& [k, x] : v.dict().items) keys.push_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      const auto offs = CodepointOffsets(v.str());
      for (size_t i = 0; i + 1 < offs.size(); ++i)
        chars.push_back(Value::Str(v.str().substr(offs[i], offs[i + 1] - offs[i])));
      return chars;
    }
    default:
      throw EvalError(fmt::format("'{}' object is not iterable", v.TypeName()));
  }
}

}  // namespace moe::chat::detail
