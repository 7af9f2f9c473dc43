// Runs a parsed template: scopes, statements, operators and the global functions (range,
// namespace, raise_exception, strftime_now). Jinja2 scoping: a for-loop iteration and a macro
// call get their own scope, so `set` inside them does not leak out (namespace() is how templates
// carry state out of a loop); if-blocks share the enclosing scope.
#include <fmt/format.h>

#include <cmath>
#include <ctime>
#include <unordered_map>
#include <vector>

#include "moe/chat/jinja.h"
#include "moe/chat/jinja_ast.h"
#include "moe/chat/jinja_builtins.h"
#include "moe/core/error.h"

namespace moe::chat {
namespace detail {
namespace {

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;

  const Value* Find(const std::string& name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent.get()) {
      const auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const Program& program, const RenderOptions& options) : prog_(program), opts_(options) {}

  std::string Run(const Value& vars) {
    auto globals = std::make_shared<Scope>();
    InstallGlobals(*globals);
    if (vars.is_dict()) {
      for (const auto& [k, v] : vars.dict().items) {
        if (k.is_string()) globals->vars[k.str()] = v;
      }
    } else if (!vars.is_undefined()) {
      throw Error(fmt::format("[chat] {}: template variables must be a dict, got {}", prog_.origin,
                              vars.TypeName()));
    }
    auto top = std::make_shared<Scope>();
    top->parent = globals;
    std::string out;
    Exec(prog_.body, top, out);
    return out;
  }

 private:
  [[noreturn]] void FailAt(const Pos& pos, const std::string& msg) const {
    moe::Fail("chat", "{}:{}:{}: {}", prog_.origin, pos.line, pos.col, msg);
  }

  void Step(const Pos& pos) {
    if (++steps_ > opts_.max_steps) {
      FailAt(pos, fmt::format("template exceeded {} steps (loop iterations, calls and outputs)",
                              opts_.max_steps));
    }
  }

  void Append(std::string& out, const std::string& s, const Pos& pos) {
    if (out.size() + s.size() > opts_.max_output_bytes) {
      FailAt(pos, fmt::format("output exceeds {} bytes", opts_.max_output_bytes));
    }
    out += s;
  }

  void CheckSize(const Value& v, const Pos& pos) {
    if (v.is_string() && v.str().size() > opts_.max_output_bytes) {
      FailAt(pos, fmt::format("string exceeds {} bytes", opts_.max_output_bytes));
    }
    if (v.is_list() && v.list().size() > static_cast<size_t>(opts_.max_steps)) {
      FailAt(pos, fmt::format("list exceeds {} items", opts_.max_steps));
    }
  }

  void InstallGlobals(Scope& g) {
    g.vars["range"] = Value::Function("range", [this](CallArgs& a) {
      if (!a.kw.empty() || a.pos.empty() || a.pos.size() > 3)
        throw EvalError("range expects 1 to 3 integer arguments");
      int64_t start = 0, stop = 0, step = 1;
      auto geti = [](const Value& v) {
        if (!v.is_int() && !v.is_bool())
          throw EvalError(fmt::format("range expects integers, got {}", v.TypeName()));
        return v.int_value();
      };
      if (a.pos.size() == 1) {
        stop = geti(a.pos[0]);
      } else {
        start = geti(a.pos[0]);
        stop = geti(a.pos[1]);
        if (a.pos.size() == 3) step = geti(a.pos[2]);
      }
      if (step == 0) throw EvalError("range() arg 3 must not be zero");
      const double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) /
                                     static_cast<double>(step));
      if (count > static_cast<double>(opts_.max_steps))
        throw EvalError(fmt::format("range of {} items is too long", count));
      List out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        out.push_back(Value::Int(i));
        if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
      }
      return Value::MakeList(std::move(out));
    });
    g.vars["namespace"] = Value::Function("namespace", [](CallArgs& a) {
      Dict attrs;
      for (const Value& p : a.pos) {
        if (!p.is_dict()) throw EvalError("namespace() takes keyword arguments or a dict");
        for (const auto& [k, v] : p.dict().items) attrs.Set(k, v);
      }
      for (const auto& [k, v] : a.kw) attrs.Set(Value::Str(k), v);
      return Value::MakeNamespace(std::move(attrs));
    });
    g.vars["dict"] = Value::Function("dict", [](CallArgs& a) {
      Dict d;
      for (const Value& p : a.pos) {
        if (!p.is_dict()) throw EvalError("dict() takes keyword arguments or a dict");
        for (const auto& [k, v] : p.dict().items) d.Set(k, v);
      }
      for (const auto& [k, v] : a.kw) d.Set(Value::Str(k), v);
      return Value::MakeDict(std::move(d));
    });
    g.vars["raise_exception"] = Value::Function("raise_exception", [](CallArgs& a) -> Value {
      const Value msg = a.Get(0, "message");
      throw EvalError("raise_exception: " + msg.Str());
    });
    g.vars["strftime_now"] = Value::Function("strftime_now", [this](CallArgs& a) {
      a.Check("strftime_now", {"format"});
      const Value f = a.Get(0, "format");
      if (!f.is_string()) throw EvalError("strftime_now expects a format string");
      std::tm tm{};
      if (opts_.now) {
        tm = *opts_.now;
      } else {
        const std::time_t t = std::time(nullptr);
        localtime_r(&t, &tm);
      }
      char buf[512];
      const size_t n =
          f.str().size() < 200 ? std::strftime(buf, sizeof(buf), f.str().c_str(), &tm) : 0;
      if (n == 0 && !f.str().empty())
        throw EvalError("strftime_now: format too long or empty result");
      return Value::Str(std::string(buf, n));
    });
  }

  // --- statements --------------------------------------------------------------------------

  Flow Exec(const Body& body, const ScopePtr& scope, std::string& out) {
    for (const NodePtr& n : body) {
      const Flow f = ExecNode(*n, scope, out);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow ExecNode(const Node& n, const ScopePtr& scope, std::string& out) {
    switch (n.kind) {
      case NodeKind::kText:
        Step(n.pos);
        Append(out, n.text, n.pos);
        return Flow::kNormal;
      case NodeKind::kOutput: {
        Step(n.pos);
        const Value v = Eval(*n.expr, scope);
        Append(out, v.Str(), n.pos);
        return Flow::kNormal;
      }
      case NodeKind::kIf:
        for (size_t i = 0; i < n.conds.size(); ++i) {
          if (Eval(*n.conds[i], scope).Truthy()) return Exec(n.bodies[i], scope, out);
        }
        return Exec(n.else_body, scope, out);
      case NodeKind::kFor:
        return ExecFor(n, scope, out);
      case NodeKind::kSet: {
        Value v;
        if (n.expr) {
          v = Eval(*n.expr, scope);
        } else {
          std::string captured;
          Exec(n.body, scope, captured);
          v = Value::Str(std::move(captured));
        }
        if (!n.attr.empty()) {
          const Value* target = scope->Find(n.targets[0]);
          if (target == nullptr || !target->is_namespace()) {
            FailAt(n.pos, fmt::format("cannot assign attribute '{}' on '{}': not a namespace",
                                      n.attr, n.targets[0]));
          }
          target->ns().Set(Value::Str(n.attr), std::move(v));
        } else {
          Assign(n.targets, v, *scope, n.pos);
        }
        return Flow::kNormal;
      }
      case NodeKind::kMacro:
        scope->vars[n.name] = MakeMacro(n, scope);
        return Flow::kNormal;
      case NodeKind::kBreak:
        return Flow::kBreak;
      case NodeKind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  void Assign(const std::vector<std::string>& targets, const Value& v, Scope& scope,
              const Pos& pos) {
    if (targets.size() == 1) {
      scope.vars[targets[0]] = v;
      return;
    }
    List items;
    try {
      items = Iterate(v);
    } catch (const EvalError& e) {
      FailAt(pos, e.what());
    }
    if (items.size() != targets.size()) {
      FailAt(pos,
             fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
    }
    for (size_t i = 0; i < targets.size(); ++i) scope.vars[targets[i]] = items[i];
  }

  Flow ExecFor(const Node& n, const ScopePtr& scope, std::string& out) {
    const Value seq = Eval(*n.expr, scope);
    List items;
    try {
      items = Iterate(seq);
    } catch (const EvalError& e) {
      FailAt(n.expr->pos, e.what());
    }
    if (n.cond) {
      List kept;
      for (const Value& item : items) {
        Step(n.pos);
        auto s = std::make_shared<Scope>();
        s->parent = scope;
        Assign(n.targets, item, *s, n.pos);
        if (Eval(*n.cond, s).Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return Exec(n.else_body, scope, out);
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      Step(n.pos);
      auto s = std::make_shared<Scope>();
      s->parent = scope;
      Assign(n.targets, items[static_cast<size_t>(i)], *s, n.pos);
      Dict loop;
      loop.Set(Value::Str("index"), Value::Int(i + 1));
      loop.Set(Value::Str("index0"), Value::Int(i));
      loop.Set(Value::Str("revindex"), Value::Int(len - i));
      loop.Set(Value::Str("revindex0"), Value::Int(len - i - 1));
      loop.Set(Value::Str("first"), Value::Bool(i == 0));
      loop.Set(Value::Str("last"), Value::Bool(i == len - 1));
      loop.Set(Value::Str("length"), Value::Int(len));
      loop.Set(Value::Str("depth"), Value::Int(1));
      loop.Set(Value::Str("depth0"), Value::Int(0));
      loop.Set(Value::Str("previtem"),
               i > 0 ? items[static_cast<size_t>(i - 1)] : Value::Undefined("loop.previtem"));
      loop.Set(Value::Str("nextitem"),
               i + 1 < len ? items[static_cast<size_t>(i + 1)] : Value::Undefined("loop.nextitem"));
      loop.Set(Value::Str("cycle"), Value::Function("loop.cycle", [i](CallArgs& a) {
                 if (a.pos.empty()) throw EvalError("loop.cycle needs at least one argument");
                 return a.pos[static_cast<size_t>(i) % a.pos.size()];
               }));
      s->vars["loop"] = Value::MakeDict(std::move(loop));
      const Flow f = Exec(n.body, s, out);
      if (f == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value MakeMacro(const Node& n, const ScopePtr& defining_scope) {
    const Node* node = &n;
    // The macro is usually stored in the scope it captures: capturing a shared_ptr would make a
    // cycle (a leak), so the renderer keeps defining scopes alive until the render ends.
    macro_scopes_.push_back(defining_scope);
    Scope* defining = defining_scope.get();
    return Value::Function(n.name, [this, node, defining](CallArgs& a) {
      if (a.pos.size() > node->params.size()) {
        throw EvalError(fmt::format("macro '{}' takes {} arguments ({} given)", node->name,
                                    node->params.size(), a.pos.size()));
      }
      if (++depth_ > opts_.max_call_depth) {
        --depth_;
        throw EvalError(fmt::format("macro calls nested deeper than {}", opts_.max_call_depth));
      }
      struct Unwind {
        int* d;
        ~Unwind() { --*d; }
      } unwind{&depth_};
      Step(node->pos);
      auto s = std::make_shared<Scope>();
      s->parent = ScopePtr(ScopePtr(), defining);  // non-owning: macro_scopes_ owns it
      std::vector<bool> set(node->params.size(), false);
      for (size_t i = 0; i < a.pos.size(); ++i) {
        s->vars[node->params[i]] = a.pos[i];
        set[i] = true;
      }
      for (const auto& [k, v] : a.kw) {
        size_t idx = node->params.size();
        for (size_t i = 0; i < node->params.size(); ++i) {
          if (node->params[i] == k) idx = i;
        }
        if (idx == node->params.size())
          throw EvalError(fmt::format("macro '{}' has no parameter '{}'", node->name, k));
        if (set[idx])
          throw EvalError(fmt::format("macro '{}' got multiple values for '{}'", node->name, k));
        s->vars[k] = v;
        set[idx] = true;
      }
      for (size_t i = 0; i < node->params.size(); ++i) {
        if (set[i]) continue;
        s->vars[node->params[i]] =
            node->defaults[i] ? Eval(*node->defaults[i], s) : Value::Undefined(node->params[i]);
      }
      std::string out;
      Exec(node->body, s, out);
      return Value::Str(std::move(out));
    });
  }

  // --- expressions -------------------------------------------------------------------------

  Value Eval(const Expr& e, const ScopePtr& scope) {
    try {
      Value v = EvalInner(e, scope);
      CheckSize(v, e.pos);
      return v;
    } catch (const EvalError& err) {
      FailAt(e.pos, err.what());
    }
  }

  CallArgs EvalArgs(const Expr& e, size_t first, const ScopePtr& scope) {
    CallArgs a;
    for (size_t i = first; i < e.args.size(); ++i) a.pos.push_back(Eval(*e.args[i], scope));
    for (const auto& [k, x] : e.kwargs) a.kw.emplace_back(k, Eval(*x, scope));
    return a;
  }

  Value EvalInner(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName: {
        const Value* v = scope->Find(e.name);
        return v != nullptr ? *v : Value::Undefined(e.name);
      }
      case ExprKind::kList:
      case ExprKind::kTuple: {
        List items;
        for (const auto& x : e.args) items.push_back(Eval(*x, scope));
        return e.kind == ExprKind::kTuple ? Value::MakeTuple(std::move(items))
                                          : Value::MakeList(std::move(items));
      }
      case ExprKind::kDict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = Eval(*e.args[i], scope);
          if (k.is_list() || k.is_dict() || k.is_namespace() || k.is_undefined()) {
            throw EvalError(fmt::format("unhashable dict key of type '{}'", k.TypeName()));
          }
          d.Set(std::move(k), Eval(*e.args[i + 1], scope));
        }
        return Value::MakeDict(std::move(d));
      }
      case ExprKind::kGetAttr:
        return GetAttr(Eval(*e.args[0], scope), e.name);
      case ExprKind::kGetItem:
        return GetItem(Eval(*e.args[0], scope), Eval(*e.args[1], scope));
      case ExprKind::kSlice: {
        const Value obj = Eval(*e.args[0], scope);
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (e.args[static_cast<size_t>(i) + 1])
            parts[i] = Eval(*e.args[static_cast<size_t>(i) + 1], scope);
        }
        return SliceValue(obj, parts[0], parts[1], parts[2]);
      }
      case ExprKind::kCall: {
        const Value fn = Eval(*e.args[0], scope);
        CallArgs a = EvalArgs(e, 1, scope);
        if (!fn.is_callable()) {
          if (fn.is_undefined()) {
            throw EvalError(fn.undefined_hint().empty()
                                ? std::string("undefined value is not callable")
                                : fmt::format("'{}' is undefined", fn.undefined_hint()));
          }
          throw EvalError(fmt::format("'{}' object is not callable", fn.TypeName()));
        }
        return fn.fn()(a);
      }
      case ExprKind::kFilter: {
        const FilterFn f = FindFilter(e.name);
        if (f == nullptr) throw EvalError(fmt::format("unknown filter '{}'", e.name));
        const Value v = Eval(*e.args[0], scope);
        const CallArgs a = EvalArgs(e, 1, scope);
        return f(v, a);
      }
      case ExprKind::kTest: {
        const TestFn t = FindTest(e.name);
        if (t == nullptr) throw EvalError(fmt::format("unknown test '{}'", e.name));
        const Value v = Eval(*e.args[0], scope);
        const CallArgs a = EvalArgs(e, 1, scope);
        return Value::Bool(t(v, a) != e.negated);
      }
      case ExprKind::kUnary: {
        const Value v = Eval(*e.args[0], scope);
        if (e.op == Op::kNot) return Value::Bool(!v.Truthy());
        if (!v.is_number())
          throw EvalError(fmt::format("bad operand type for unary {}: '{}'",
                                      e.op == Op::kNeg ? '-' : '+', v.TypeName()));
        if (e.op == Op::kPos) return v.is_bool() ? Value::Int(v.int_value()) : v;
        if (v.is_float()) return Value::Float(-v.number());
        if (v.int_value() == INT64_MIN) throw EvalError("integer overflow");
        return Value::Int(-v.int_value());
      }
      case ExprKind::kBinary: {
        if (e.op == Op::kAnd || e.op == Op::kOr) {
          Value a = Eval(*e.args[0], scope);
          if (a.Truthy() == (e.op == Op::kOr)) return a;
          return Eval(*e.args[1], scope);
        }
        const Value a = Eval(*e.args[0], scope);
        const Value b = Eval(*e.args[1], scope);
        return Arith(e.op, a, b);
      }
      case ExprKind::kCompare: {
        Value left = Eval(*e.args[0], scope);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = Eval(*e.args[i + 1], scope);
          if (!CompareOp(e.ops[i], left, right)) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case ExprKind::kCond:
        if (Eval(*e.args[0], scope).Truthy()) return Eval(*e.args[1], scope);
        return e.args[2] ? Eval(*e.args[2], scope) : Value::Undefined();
    }
    return Value();
  }

  static void RequireDefined(const Value& v) {
    if (v.is_undefined()) {
      throw EvalError(v.undefined_hint().empty()
                          ? std::string("undefined value used in an operation")
                          : fmt::format("'{}' is undefined", v.undefined_hint()));
    }
  }

  static bool Contains(const Value& container, const Value& item) {
    switch (container.kind()) {
      case Value::Kind::kUndefined:
        return false;
      case Value::Kind::kString:
        if (!item.is_string())
          throw EvalError(fmt::format("'in <string>' requires string as left operand, not {}",
                                      item.TypeName()));
        return container.str().find(item.str()) != std::string::npos;
      case Value::Kind::kList:
        for (const Value& x : container.list()) {
          if (Equals(x, item)) return true;
        }
        return false;
      case Value::Kind::kDict:
        return container.dict().Find(item) != nullptr;
      case Value::Kind::kNamespace:
        return container.ns().Find(item) != nullptr;
      default:
        throw EvalError(fmt::format("argument of type '{}' is not iterable", container.TypeName()));
    }
  }

  static bool CompareOp(Op op, const Value& a, const Value& b) {
    switch (op) {
      case Op::kEq:
        return Equals(a, b);
      case Op::kNe:
        return !Equals(a, b);
      case Op::kIn:
        return Contains(b, a);
      case Op::kNotIn:
        return !Contains(b, a);
      default:
        break;
    }
    RequireDefined(a);
    RequireDefined(b);
    const int c = Compare(a, b);
    switch (op) {
      case Op::kLt:
        return c < 0;
      case Op::kLe:
        return c <= 0;
      case Op::kGt:
        return c > 0;
      case Op::kGe:
        return c >= 0;
      default:
        return false;
    }
  }

  Value Arith(Op op, const Value& a, const Value& b) {
    if (op == Op::kConcat) return Value::Str(a.Str() + b.Str());
    RequireDefined(a);
    RequireDefined(b);
    static const char* const kSym[] = {"+", "-", "*", "/", "//", "%", "**"};
    const auto type_error = [&]() -> EvalError {
      return EvalError(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'",
                                   kSym[static_cast<int>(op)], a.TypeName(), b.TypeName()));
    };
    if (op == Op::kAdd) {
      if (a.is_string() && b.is_string()) {
        if (a.str().size() + b.str().size() > opts_.max_output_bytes)
          throw EvalError("string too long");
        return Value::Str(a.str() + b.str());
      }
      if (a.is_list() && b.is_list()) {
        List items = a.list();
        items.insert(items.end(), b.list().begin(), b.list().end());
        return Value::MakeList(std::move(items));
      }
      if (a.is_string() || b.is_string()) {
        if (a.is_string())
          throw EvalError(
              fmt::format("can only concatenate str (not \"{}\") to str", b.TypeName()));
        throw type_error();
      }
    }
    if (op == Op::kMul && (((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) ||
                           ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool())))) {
      const Value& seq = a.is_int() || a.is_bool() ? b : a;
      const int64_t times = std::max<int64_t>(0, (a.is_int() || a.is_bool() ? a : b).int_value());
      const double size =
          static_cast<double>(seq.is_string() ? seq.str().size() : seq.list().size()) *
          static_cast<double>(times);
      if (size > static_cast<double>(opts_.max_output_bytes))
        throw EvalError("repeated sequence too long");
      if (seq.is_string()) {
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += seq.str();
        return Value::Str(std::move(out));
      }
      List out;
      for (int64_t i = 0; i < times; ++i)
        out.insert(out.end(), seq.list().begin(), seq.list().end());
      return Value::MakeList(std::move(out));
    }
    if (op == Op::kMod && a.is_string()) return Value::Str(PercentFormat(a.str(), b));
    if (!a.is_number() || !b.is_number()) throw type_error();
    const bool floats = a.is_float() || b.is_float() || op == Op::kDiv;
    if (floats) {
      const double x = a.number();
      const double y = b.number();
      switch (op) {
        case Op::kAdd:
          return Value::Float(x + y);
        case Op::kSub:
          return Value::Float(x - y);
        case Op::kMul:
          return Value::Float(x * y);
        case Op::kDiv:
          if (y == 0) throw EvalError("division by zero");
          return Value::Float(x / y);
        case Op::kFloorDiv:
          if (y == 0) throw EvalError("float floor division by zero");
          return Value::Float(std::floor(x / y));
        case Op::kMod: {
          if (y == 0) throw EvalError("float modulo");
          double r = std::fmod(x, y);
          if (r != 0 && ((r < 0) != (y < 0))) r += y;
          return Value::Float(r);
        }
        case Op::kPow:
          return Value::Float(std::pow(x, y));
        default:
          throw type_error();
      }
    }
    const int64_t x = a.int_value();
    const int64_t y = b.int_value();
    int64_t r = 0;
    switch (op) {
      case Op::kAdd:
        if (__builtin_add_overflow(x, y, &r)) throw EvalError("integer overflow");
        return Value::Int(r);
      case Op::kSub:
        if (__builtin_sub_overflow(x, y, &r)) throw EvalError("integer overflow");
        return Value::Int(r);
      case Op::kMul:
        if (__builtin_mul_overflow(x, y, &r)) throw EvalError("integer overflow");
        return Value::Int(r);
      case Op::kFloorDiv:
      case Op::kMod: {
        if (y == 0) throw EvalError("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) {
          if (op == Op::kMod) return Value::Int(0);
          throw EvalError("integer overflow");
        }
        int64_t q = x / y;
        int64_t m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::Int(op == Op::kFloorDiv ? q : m);
      }
      case Op::kPow: {
        if (y < 0) return Value::Float(std::pow(static_cast<double>(x), static_cast<double>(y)));
        int64_t acc = 1;
        for (int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(acc, x, &acc)) throw EvalError("integer overflow");
          if (acc == 0 || acc == 1) break;
          if (acc == -1) {
            acc = ((y - i - 1) % 2 == 0) ? -1 : 1;
            break;
          }
        }
        return Value::Int(acc);
      }
      default:
        throw type_error();
    }
  }

  // Python printf-style formatting: %s %r %d %i %f %% with a value or a list of values.
  static std::string PercentFormat(const std::string& fmt_str, const Value& args) {
    List vals = args.is_list() ? args.list() : List{args};
    size_t next = 0;
    std::string out;
    for (size_t i = 0; i < fmt_str.size(); ++i) {
      if (fmt_str[i] != '%') {
        out += fmt_str[i];
        continue;
      }
      if (i + 1 >= fmt_str.size()) throw EvalError("incomplete format");
      const char c = fmt_str[++i];
      if (c == '%') {
        out += '%';
        continue;
      }
      if (next >= vals.size()) throw EvalError("not enough arguments for format string");
      const Value& v = vals[next++];
      switch (c) {
        case 's':
          out += v.Str();
          break;
        case 'r':
          out += v.Repr();
          break;
        case 'd':
        case 'i':
          if (!v.is_number())
            throw EvalError(
                fmt::format("%{} format: a number is required, not {}", c, v.TypeName()));
          out += std::to_string(v.is_float() ? static_cast<int64_t>(v.number()) : v.int_value());
          break;
        case 'f':
          if (!v.is_number())
            throw EvalError(fmt::format("%f format: a number is required, not {}", v.TypeName()));
          out += fmt::format("{:.6f}", v.number());
          break;
        default:
          throw EvalError(fmt::format("unsupported format character '{}'", c));
      }
    }
    if (next < vals.size()) throw EvalError("not all arguments converted during string formatting");
    return out;
  }

  const Program& prog_;
  const RenderOptions& opts_;
  int64_t steps_ = 0;
  int depth_ = 0;
  std::vector<ScopePtr> macro_scopes_;
};

}  // namespace
}  // namespace detail

Template Template::Parse(std::string_view source, std::string origin) {
  Template t;
  t.program_ = detail::ParseProgram(source, std::move(origin));
  return t;
}

std::string Template::Render(const Value& vars, const RenderOptions& options) const {
  MOE_CHECK(program_ != nullptr, "chat", "Render on an empty Template");
  detail::Renderer r(*program_, options);
  return r.Run(vars);
}

const std::string& Template::origin() const { return program_->origin; }

}  // namespace moe::chat
