// Filters, tests, attribute/item lookup and the methods of str/dict that chat templates call
// (internal to moe/chat). Errors are EvalError; the renderer adds the template position.
#pragma once

#include <string>
#include <string_view>

#include "moe/chat/value.h"

namespace moe::chat::detail {

using FilterFn = Value (*)(const Value& v, const CallArgs& args);
using TestFn = bool (*)(const Value& v, const CallArgs& args);

FilterFn FindFilter(std::string_view name);  // nullptr when unknown
TestFn FindTest(std::string_view name);      // nullptr when unknown

// obj.name: a method of str/dict first, then a key (Jinja's getattr-then-getitem).
Value GetAttr(const Value& obj, const std::string& name);
// obj[key]: a key/index first, then an attribute for string keys.
Value GetItem(const Value& obj, const Value& key);
// obj[start:stop:step] (undefined = omitted) on strings (code points) and lists.
Value SliceValue(const Value& obj, const Value& start, const Value& stop, const Value& step);
// Items of a for loop: list items, dict keys, string characters; undefined -> none.
List Iterate(const Value& v);

}  // namespace moe::chat::detail
