// The parsed form of a template (internal to moe/chat): expressions and statements with their
// source positions, produced by jinja_parse.cc and run by jinja_render.cc.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/chat/value.h"

namespace moe::chat::detail {

struct Pos {
  int line = 1;
  int col = 1;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,  // literal
  kName,     // name
  kList,     // args: items
  kTuple,    // args: items (a list at run time)
  kDict,     // args: k0, v0, k1, v1, ...
  kGetAttr,  // args[0] . name
  kGetItem,  // args[0] [ args[1] ]
  kSlice,    // args[0] [ args[1] : args[2] : args[3] ] (null = omitted)
  kCall,     // args[0] ( args[1..], kwargs )
  kFilter,   // args[0] | name ( args[1..], kwargs )
  kTest,     // args[0] is [not] name ( args[1..] )
  kUnary,    // op: '-', '+', '!' (not)
  kBinary,   // op: + - * / // % ** ~ and or
  kCompare,  // args[0] (ops[i] args[i+1])...
  kCond,     // args[1] if args[0] else args[2] (args[2] may be null)
};

enum class Op {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kFloorDiv,
  kMod,
  kPow,
  kConcat,
  kAnd,
  kOr,
  kNot,
  kNeg,
  kPos,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,
  kNotIn
};

struct Expr {
  ExprKind kind;
  Pos pos;
  Value literal;
  std::string name;
  Op op = Op::kAdd;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<Op> ops;  // kCompare
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class NodeKind {
  kText,    // text
  kOutput,  // {{ expr }}
  kIf,      // conds[i] -> bodies[i]; else_body
  kFor,     // targets in expr [if cond]: body; else_body
  kSet,     // targets = expr, or target.attr = expr (attr non-empty), or block body
  kMacro,   // name(params = defaults): body
  kBreak,
  kContinue,
};

struct Node {
  NodeKind kind;
  Pos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<ExprPtr> conds;
  std::vector<Body> bodies;
  Body body;
  Body else_body;
  std::vector<std::string> targets;
  std::string attr;
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param (null = required)
};

struct Program {
  std::string origin;
  Body body;
};

}  // namespace moe::chat::detail

namespace moe::chat::detail {

// Parses a template (throws moe::Error "[chat] origin:line:col: ...").
std::shared_ptr<Program> ParseProgram(std::string_view source, std::string origin);

}  // namespace moe::chat::detail
