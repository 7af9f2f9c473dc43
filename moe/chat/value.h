// Values of the Jinja-subset interpreter (moe/chat): what Python objects are to Jinja.
//
// undefined, none, bool, int (int64), float (double), string (UTF-8), list, dict (insertion
// ordered, any value as key), namespace (the one mutable object: `set ns.x = ...`) and callable
// (macros, builtins, bound methods). Lists, dicts and strings are immutable and shared, so copying
// a Value is cheap. Conversions follow Python: Str() is str(x), Repr() is repr(x), ToJson() is
// json.dumps(x, ensure_ascii=False) as Hugging Face's tojson filter calls it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::chat {

class Value;
using List = std::vector<Value>;
struct Dict;
struct CallArgs;
using NativeFn = std::function<Value(CallArgs&)>;

// Thrown by value operations and builtins; the renderer turns it into a moe::Error that names
// the template origin, line and column.
class EvalError : public std::runtime_error {
 public:
  explicit EvalError(const std::string& what) : std::runtime_error(what) {}
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  Value() = default;                              // undefined
  static Value Undefined(std::string hint = "");  // hint: the name that was looked up (errors)
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value Str(std::string s);
  static Value MakeList(List items);
  static Value MakeTuple(List items);  // a list that prints as (a, b) (dict items, `a, b`)
  static Value MakeDict(Dict d);
  static Value MakeNamespace(Dict attrs);
  static Value Function(std::string name, NativeFn fn);
  // JSON -> Value; ordered_json keeps the object key order (as Python dicts do), json sorts keys.
  static Value FromJson(const nlohmann::json& j);
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool;
  }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_tuple() const { return tuple_; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double number() const;  // int, bool or float as double
  const std::string& str() const { return *s_; }
  const List& list() const { return *list_; }
  const Dict& dict() const { return *dict_; }
  Dict& ns() const { return *ns_; }  // the namespace's attributes (mutable)
  const std::string& fn_name() const { return *s_; }
  const NativeFn& fn() const { return *fn_; }
  const std::string& undefined_hint() const;

  bool Truthy() const;
  std::string Str() const;       // Python str(); undefined -> ""
  std::string Repr() const;      // Python repr()
  std::string TypeName() const;  // Python type name ('str', 'int', 'list', 'dict', 'NoneType', ...)
  // json.dumps(x, ensure_ascii=False, indent=indent) (indent < 0: single line with ", " ": ").
  std::string ToJson(int indent = -1) const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;  // string, callable name, undefined hint
  std::shared_ptr<const List> list_;
  std::shared_ptr<const Dict> dict_;
  std::shared_ptr<Dict> ns_;
  std::shared_ptr<const NativeFn> fn_;
};

struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* Find(const Value& key) const;
  const Value* Find(std::string_view key) const;
  void Set(Value key, Value value);  // replaces an existing key in place, else appends
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Positional index i or keyword `name`; removes nothing. Undefined when absent.
  Value Get(size_t i, std::string_view name) const;
  bool Has(size_t i, std::string_view name) const;
  // Throws when there are more positional or unknown keyword arguments than `names`.
  void Check(std::string_view fn, std::initializer_list<std::string_view> names) const;
};

// Python ==, and <, <=, ... (Compare < 0, == 0, > 0; throws EvalError on unorderable types).
bool Equals(const Value& a, const Value& b);
int Compare(const Value& a, const Value& b);

// Python float repr (shortest round trip, "1.0", "1e+16", "inf", "nan").
std::string FloatRepr(double f);

// Byte offset of each code point of s (an ill-formed byte counts as one), plus s.size() at the end.
std::vector<size_t> CodepointOffsets(std::string_view s);
// Python str.isspace() for one code point.
bool IsPySpace(uint32_t cp);

}  // namespace moe::chat
