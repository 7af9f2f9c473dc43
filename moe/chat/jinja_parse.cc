// Lexer and parser of the Jinja subset: source -> detail::Program.
//
// The lexer splits the source into text and tags the way Jinja2's lexer does with trim_blocks and
// lstrip_blocks on (Hugging Face's settings): "-" on either side of a tag strips all whitespace
// on that side, a block or comment tag eats one newline after it, and spaces/tabs between a line
// start and a block or comment tag are dropped. Inside a tag it produces expression tokens; the
// tag ends at "%}" / "}}" only outside brackets. The parser is a recursive-descent copy of
// Jinja2's expression grammar (same precedence).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "moe/chat/jinja_ast.h"
#include "moe/core/error.h"
#include "moe/tokenizer/unicode.h"

namespace moe::chat::detail {
namespace {

constexpr int kMaxNesting = 200;

enum class Tok {
  kData,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  size_t offset;
  std::string text;  // data, name, operator, decoded string
  int64_t i = 0;
  double f = 0;
};

std::string TokDesc(const Token& t) {
  switch (t.type) {
    case Tok::kData:
      return "template text";
    case Tok::kVarBegin:
      return "'{{'";
    case Tok::kVarEnd:
      return "'}}'";
    case Tok::kBlockBegin:
      return "'{%'";
    case Tok::kBlockEnd:
      return "'%}'";
    case Tok::kName:
      return "'" + t.text + "'";
    case Tok::kString:
      return "string literal";
    case Tok::kInt:
    case Tok::kFloat:
      return "number";
    case Tok::kOp:
      return "'" + t.text + "'";
    case Tok::kEof:
      return "end of template";
  }
  return "?";
}

// Python str.splitlines() + "\n".join(): every line boundary becomes "\n" and one trailing line
// boundary is dropped (Jinja2 with keep_trailing_newline=False).
std::string NormalizeNewlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool ended_with_break = false;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t blen = 0;
    if (c == '\r') {
      blen = (i + 1 < s.size() && s[i + 1] == '\n') ? 2 : 1;
    } else if (c == '\n' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e) {
      blen = 1;
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x85) {
      blen = 2;
    } else if (c == 0xe2 && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(s[i + 2]) == 0xa8 ||
                static_cast<unsigned char>(s[i + 2]) == 0xa9)) {
      blen = 3;
    }
    if (blen > 0) {
      out += '\n';
      i += blen;
      ended_with_break = true;
    } else {
      out += s[i];
      ++i;
      ended_with_break = false;
    }
  }
  if (ended_with_break) out.pop_back();
  return out;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Lexer {
 public:
  Lexer(const std::string& src, const std::string& origin) : src_(src), origin_(origin) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  Pos PosOf(size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());
    return Pos{static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  [[noreturn]] void Fail(size_t offset, const std::string& msg) const {
    const Pos p = PosOf(offset);
    moe::Fail("chat", "{}:{}:{}: {}", origin_, p.line, p.col, msg);
  }

  std::vector<Token> Run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t p = pos;
      while (true) {
        p = src_.find('{', p);
        if (p == std::string::npos || p + 1 >= n) {
          p = std::string::npos;
          break;
        }
        const char c = src_[p + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++p;
      }
      if (p == std::string::npos) {
        Emit(Tok::kData, pos, src_.substr(pos));
        break;
      }
      const char kind = src_[p + 1];
      const char sign = p + 2 < n ? src_[p + 2] : '\0';
      std::string data = src_.substr(pos, p - pos);
      if (sign == '-') {
        while (!data.empty() && IsSpace(data.back())) data.pop_back();
      } else if (sign != '+' && kind != '{') {
        const size_t nl = data.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && l_pos < data.size() &&
            std::all_of(data.begin() + static_cast<std::ptrdiff_t>(l_pos), data.end(), IsSpace)) {
          data.resize(l_pos);
        }
      }
      if (!data.empty()) Emit(Tok::kData, pos, std::move(data));
      size_t q = p + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        const size_t end = src_.find("#}", q);
        if (end == std::string::npos) Fail(p, "unclosed comment (missing '#}')");
        const bool strip = end > q && src_[end - 1] == '-';
        const bool keep = end > q && src_[end - 1] == '+';
        pos = AfterTag(end + 2, strip, /*trim=*/!keep, &line_starting);
        continue;
      }
      if (kind == '%' && TryRaw(p, q, &pos, &line_starting)) continue;
      Emit(kind == '%' ? Tok::kBlockBegin : Tok::kVarBegin, p, "");
      bool strip = false;
      bool keep = false;
      q = LexTag(q, kind, p, &strip, &keep);
      pos = AfterTag(q, strip, /*trim=*/kind == '%' && !keep, &line_starting);
    }
    Emit(Tok::kEof, n, "");
    return std::move(tokens_);
  }

 private:
  void Emit(Tok t, size_t offset, std::string text) {
    tokens_.push_back(Token{t, offset, std::move(text)});
  }

  size_t AfterTag(size_t q, bool strip, bool trim, bool* line_starting) {
    const size_t start = q;
    if (strip) {
      while (q < src_.size() && IsSpace(src_[q])) ++q;
    } else if (trim && q < src_.size() && src_[q] == '\n') {
      ++q;
    }
    *line_starting = q > start ? src_[q - 1] == '\n' : src_[start - 1] == '\n';
    return q;
  }

  // {% raw %}...{% endraw %}: the inside is text.
  bool TryRaw(size_t p, size_t q, size_t* pos, bool* line_starting) {
    size_t i = q;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    bool strip_after = false;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) strip_after = src_[i++] == '-';
    if (src_.compare(i, 2, "%}") != 0) return false;
    size_t body = AfterTag(i + 2, strip_after, true, line_starting);
    // Find {%[-+]? endraw [-+]?%}
    size_t s = body;
    while (true) {
      s = src_.find("{%", s);
      if (s == std::string::npos) Fail(p, "missing '{% endraw %}'");
      size_t j = s + 2;
      const bool strip_before = j < src_.size() && src_[j] == '-';
      if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) ++j;
      while (j < src_.size() && IsSpace(src_[j])) ++j;
      if (src_.compare(j, 6, "endraw") != 0) {
        s += 2;
        continue;
      }
      j += 6;
      while (j < src_.size() && IsSpace(src_[j])) ++j;
      bool strip_end = false;
      if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) strip_end = src_[j++] == '-';
      if (src_.compare(j, 2, "%}") != 0) {
        s += 2;
        continue;
      }
      std::string text = src_.substr(body, s - body);
      if (strip_before) {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      }
      if (!text.empty()) Emit(Tok::kData, body, std::move(text));
      *pos = AfterTag(j + 2, strip_end, true, line_starting);
      return true;
    }
  }

  // Tokens of one tag from q; returns the offset after its closing delimiter.
  size_t LexTag(size_t q, char kind, size_t tag_start, bool* strip, bool* keep) {
    std::vector<char> stack;
    const size_t n = src_.size();
    while (true) {
      while (q < n && IsSpace(src_[q])) ++q;
      if (q >= n)
        Fail(tag_start,
             kind == '%' ? "unclosed tag (missing '%}')" : "unclosed '{{' (missing '}}')");
      if (stack.empty()) {
        const char* close = kind == '%' ? "%}" : "}}";
        if ((src_[q] == '-' || src_[q] == '+') && src_.compare(q + 1, 2, close) == 0 &&
            !(kind == '{' && src_[q] == '+')) {
          *strip = src_[q] == '-';
          *keep = src_[q] == '+';
          Emit(kind == '%' ? Tok::kBlockEnd : Tok::kVarEnd, q, "");
          return q + 3;
        }
        if (src_.compare(q, 2, close) == 0) {
          Emit(kind == '%' ? Tok::kBlockEnd : Tok::kVarEnd, q, "");
          return q + 2;
        }
      }
      const char c = src_[q];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = q;
        while (e < n && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        Emit(Tok::kName, q, src_.substr(q, e - q));
        q = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        q = LexNumber(q);
      } else if (c == '\'' || c == '"') {
        q = LexString(q);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                           "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                           "]",  "{",  "}",  ",",  ".",  ":",  "|"};
        const char* op = nullptr;
        for (const char* o : kOps) {
          if (src_.compare(q, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        }
        if (op == nullptr) Fail(q, fmt::format("unexpected character '{}'", c));
        const char oc = op[0];
        if (op[1] == '\0' && (oc == '(' || oc == '[' || oc == '{')) {
          if (stack.size() >= kMaxNesting) Fail(q, "brackets nested too deeply");
          stack.push_back(oc);
        } else if (op[1] == '\0' && (oc == ')' || oc == ']' || oc == '}')) {
          const char want = oc == ')' ? '(' : (oc == ']' ? '[' : '{');
          if (stack.empty() || stack.back() != want) Fail(q, fmt::format("unexpected '{}'", oc));
          stack.pop_back();
        }
        Emit(Tok::kOp, q, op);
        q += std::strlen(op);
      }
    }
  }

  size_t LexNumber(size_t q) {
    const size_t n = src_.size();
    size_t e = q;
    auto digits = [&] {
      while (e < n && (std::isdigit(static_cast<unsigned char>(src_[e])) ||
                       (src_[e] == '_' && e + 1 < n &&
                        std::isdigit(static_cast<unsigned char>(src_[e + 1]))))) {
        ++e;
      }
    };
    digits();
    bool is_float = false;
    if (e + 1 < n && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      digits();
    }
    if (e < n && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t k = e + 1;
      if (k < n && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < n && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        e = k;
        digits();
      }
    }
    std::string text = src_.substr(q, e - q);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    Token t{is_float ? Tok::kFloat : Tok::kInt, q, text};
    if (is_float) {
      t.f = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      char* end = nullptr;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (errno == ERANGE) Fail(q, "integer literal out of range");
      t.i = v;
    }
    tokens_.push_back(std::move(t));
    return e;
  }

  // Python unicode_escape decoding of a quoted literal (Jinja2's rule).
  size_t LexString(size_t q) {
    const char quote = src_[q];
    const size_t n = src_.size();
    std::string out;
    size_t i = q + 1;
    while (true) {
      if (i >= n) Fail(q, "unterminated string literal");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      if (i + 1 >= n) Fail(q, "unterminated string literal");
      const char e = src_[i + 1];
      i += 2;
      auto hex = [&](int count) -> uint32_t {
        uint32_t v = 0;
        for (int k = 0; k < count; ++k) {
          if (i >= n || !std::isxdigit(static_cast<unsigned char>(src_[i]))) {
            Fail(i, "truncated \\x, \\u or \\U escape in string literal");
          }
          const char h = src_[i++];
          v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                 ? h - '0'
                                                 : (std::tolower(h) - 'a' + 10));
        }
        return v;
      };
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\n':
          break;  // line continuation
        case 'x':
          tokenizer::AppendUtf8(hex(2), out);
          break;
        case 'u':
          tokenizer::AppendUtf8(hex(4), out);
          break;
        case 'U': {
          const uint32_t cp = hex(8);
          if (cp > 0x10FFFF) Fail(i, "illegal Unicode character in \\U escape");
          tokenizer::AppendUtf8(cp, out);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i < n && src_[i] >= '0' && src_[i] <= '7'; ++k) {
              v = v * 8 + static_cast<uint32_t>(src_[i++] - '0');
            }
            tokenizer::AppendUtf8(v, out);
          } else {
            out += '\\';  // unknown escapes stay as written
            out += e;
          }
      }
    }
    Emit(Tok::kString, q, std::move(out));
    return i + 1;
  }

  const std::string& src_;
  const std::string& origin_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

class Parser {
 public:
  Parser(std::vector<Token> toks, const Lexer& lexer) : toks_(std::move(toks)), lexer_(lexer) {}

  Body ParseTemplate() {
    Body body = ParseBody({});
    if (Cur().type != Tok::kEof) Fail("unexpected tag");
    return body;
  }

 private:
  const Token& Cur() const { return toks_[i_]; }
  const Token& Peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  Pos PosOf(const Token& t) const { return lexer_.PosOf(t.offset); }
  void Advance() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  [[noreturn]] void Fail(const std::string& msg) const { lexer_.Fail(Cur().offset, msg); }
  bool IsOp(const char* op) const { return Cur().type == Tok::kOp && Cur().text == op; }
  bool IsName(const char* name) const { return Cur().type == Tok::kName && Cur().text == name; }
  void ExpectOp(const char* op) {
    if (!IsOp(op)) Fail(fmt::format("expected '{}', got {}", op, TokDesc(Cur())));
    Advance();
  }
  void ExpectName(const char* name) {
    if (!IsName(name)) Fail(fmt::format("expected '{}', got {}", name, TokDesc(Cur())));
    Advance();
  }
  std::string ExpectIdent(const char* what) {
    if (Cur().type != Tok::kName) Fail(fmt::format("expected {}, got {}", what, TokDesc(Cur())));
    std::string s = Cur().text;
    Advance();
    return s;
  }
  void ExpectBlockEnd() {
    if (Cur().type != Tok::kBlockEnd) Fail(fmt::format("expected '%}}', got {}", TokDesc(Cur())));
    Advance();
  }

  struct DepthGuard {
    explicit DepthGuard(Parser* p) : p(p) {
      if (++p->depth_ > kMaxNesting) p->Fail("template nested too deeply");
    }
    ~DepthGuard() { --p->depth_; }
    Parser* p;
  };

  // Statements until a block tag whose name is in `ends` (left unconsumed: Cur() is its name)
  // or the end of the template.
  Body ParseBody(std::initializer_list<const char*> ends) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = Cur();
      if (t.type == Tok::kEof) {
        if (ends.size() > 0) {
          std::string want;
          for (const char* e : ends) want += (want.empty() ? "'" : " or '") + std::string(e) + "'";
          Fail(fmt::format("unexpected end of template, expected {}", want));
        }
        return body;
      }
      if (t.type == Tok::kData) {
        auto node = std::make_unique<Node>();
        node->kind = NodeKind::kText;
        node->pos = PosOf(t);
        node->text = t.text;
        body.push_back(std::move(node));
        Advance();
      } else if (t.type == Tok::kVarBegin) {
        auto node = std::make_unique<Node>();
        node->kind = NodeKind::kOutput;
        node->pos = PosOf(t);
        Advance();
        node->expr = ParseTupleExpr(true);
        if (Cur().type != Tok::kVarEnd)
          Fail(fmt::format("expected '}}}}', got {}", TokDesc(Cur())));
        Advance();
        body.push_back(std::move(node));
      } else if (t.type == Tok::kBlockBegin) {
        const Token& name = Peek();
        if (name.type != Tok::kName) lexer_.Fail(name.offset, "expected a tag name after '{%'");
        for (const char* e : ends) {
          if (name.text == e) {
            Advance();  // '{%'; Cur() is the end name
            return body;
          }
        }
        Advance();
        ParseStatement(body);
      } else {
        Fail(fmt::format("unexpected {}", TokDesc(t)));
      }
    }
  }

  void ParseStatement(Body& body) {
    const Token& t = Cur();
    const Pos pos = PosOf(t);
    const std::string tag = t.text;
    Advance();
    auto node = std::make_unique<Node>();
    node->pos = pos;
    if (tag == "if") {
      node->kind = NodeKind::kIf;
      node->conds.push_back(ParseExpr(true));
      ExpectBlockEnd();
      while (true) {
        node->bodies.push_back(ParseBody({"elif", "else", "endif"}));
        if (IsName("elif")) {
          Advance();
          node->conds.push_back(ParseExpr(true));
          ExpectBlockEnd();
          continue;
        }
        if (IsName("else")) {
          Advance();
          ExpectBlockEnd();
          node->else_body = ParseBody({"endif"});
        }
        ExpectName("endif");
        ExpectBlockEnd();
        break;
      }
    } else if (tag == "for") {
      node->kind = NodeKind::kFor;
      node->targets.push_back(ExpectIdent("a loop variable name"));
      while (IsOp(",")) {
        Advance();
        node->targets.push_back(ExpectIdent("a loop variable name"));
      }
      ExpectName("in");
      node->expr = ParseTupleExpr(false);
      if (IsName("if")) {
        Advance();
        node->cond = ParseExpr(true);
      }
      if (IsName("recursive")) Fail("recursive for loops are not supported");
      ExpectBlockEnd();
      ++loop_depth_;
      node->body = ParseBody({"else", "endfor"});
      --loop_depth_;
      if (IsName("else")) {
        Advance();
        ExpectBlockEnd();
        node->else_body = ParseBody({"endfor"});
      }
      ExpectName("endfor");
      ExpectBlockEnd();
    } else if (tag == "set") {
      node->kind = NodeKind::kSet;
      node->targets.push_back(ExpectIdent("a variable name"));
      if (IsOp(".")) {
        Advance();
        node->attr = ExpectIdent("an attribute name");
      } else {
        while (IsOp(",")) {
          Advance();
          node->targets.push_back(ExpectIdent("a variable name"));
        }
      }
      if (IsOp("=")) {
        Advance();
        node->expr = ParseTupleExpr(true);
        ExpectBlockEnd();
      } else {
        if (node->targets.size() != 1 || !node->attr.empty()) Fail("expected '='");
        ExpectBlockEnd();
        node->body = ParseBody({"endset"});
        ExpectName("endset");
        ExpectBlockEnd();
      }
    } else if (tag == "macro") {
      node->kind = NodeKind::kMacro;
      node->name = ExpectIdent("a macro name");
      ExpectOp("(");
      while (!IsOp(")")) {
        node->params.push_back(ExpectIdent("a parameter name"));
        if (IsOp("=")) {
          Advance();
          node->defaults.push_back(ParseExpr(true));
        } else {
          node->defaults.push_back(nullptr);
        }
        if (!IsOp(",")) break;
        Advance();
      }
      ExpectOp(")");
      ExpectBlockEnd();
      const int saved = loop_depth_;
      loop_depth_ = 0;
      node->body = ParseBody({"endmacro"});
      loop_depth_ = saved;
      ExpectName("endmacro");
      ExpectBlockEnd();
    } else if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) lexer_.Fail(t.offset, fmt::format("'{}' outside of a loop", tag));
      node->kind = tag == "break" ? NodeKind::kBreak : NodeKind::kContinue;
      ExpectBlockEnd();
    } else if (tag == "generation") {
      // transformers' AssistantTracker marks assistant text for masks; rendering is unchanged.
      ExpectBlockEnd();
      Body inner = ParseBody({"endgeneration"});
      ExpectName("endgeneration");
      ExpectBlockEnd();
      for (auto& n : inner) body.push_back(std::move(n));
      return;
    } else {
      static const char* const kEnds[] = {"endif", "endfor", "endset",        "endmacro",
                                          "elif",  "else",   "endgeneration", "endraw"};
      for (const char* e : kEnds) {
        if (tag == e) lexer_.Fail(t.offset, fmt::format("unexpected '{}'", tag));
      }
      lexer_.Fail(t.offset, fmt::format("unknown or unsupported tag '{}'", tag));
    }
    body.push_back(std::move(node));
  }

  ExprPtr Make(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = PosOf(at);
    return e;
  }

  // expr (',' expr)* -> a tuple when there is a comma (e.g. `{% set a = 1, 2 %}`).
  ExprPtr ParseTupleExpr(bool with_cond) {
    const Token& start = Cur();
    ExprPtr first = ParseExpr(with_cond);
    if (!IsOp(",")) return first;
    auto tuple = Make(ExprKind::kTuple, start);
    tuple->args.push_back(std::move(first));
    while (IsOp(",")) {
      Advance();
      if (Cur().type == Tok::kBlockEnd || Cur().type == Tok::kVarEnd || IsOp(")")) break;
      tuple->args.push_back(ParseExpr(with_cond));
    }
    return tuple;
  }

  ExprPtr ParseExpr(bool with_cond) {
    DepthGuard guard(this);
    if (!with_cond) return ParseOr();
    ExprPtr e = ParseOr();
    while (IsName("if")) {
      const Token& at = Cur();
      Advance();
      auto cond = Make(ExprKind::kCond, at);
      cond->args.push_back(ParseOr());
      cond->args.push_back(std::move(e));
      if (IsName("else")) {
        Advance();
        cond->args.push_back(ParseExpr(true));
      } else {
        cond->args.push_back(nullptr);
      }
      e = std::move(cond);
    }
    return e;
  }

  ExprPtr Binary(Op op, const Token& at, ExprPtr a, ExprPtr b) {
    auto e = Make(ExprKind::kBinary, at);
    e->op = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr e = ParseAnd();
    while (IsName("or")) {
      const Token& at = Cur();
      Advance();
      e = Binary(Op::kOr, at, std::move(e), ParseAnd());
    }
    return e;
  }

  ExprPtr ParseAnd() {
    ExprPtr e = ParseNot();
    while (IsName("and")) {
      const Token& at = Cur();
      Advance();
      e = Binary(Op::kAnd, at, std::move(e), ParseNot());
    }
    return e;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      auto e = Make(ExprKind::kUnary, Cur());
      Advance();
      e->op = Op::kNot;
      e->args.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const Token& start = Cur();
    ExprPtr e = ParseMath1();
    ExprPtr cmp;
    while (true) {
      Op op;
      if (IsOp("==")) {
        op = Op::kEq;
      } else if (IsOp("!=")) {
        op = Op::kNe;
      } else if (IsOp("<")) {
        op = Op::kLt;
      } else if (IsOp("<=")) {
        op = Op::kLe;
      } else if (IsOp(">")) {
        op = Op::kGt;
      } else if (IsOp(">=")) {
        op = Op::kGe;
      } else if (IsName("in")) {
        op = Op::kIn;
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().text == "in") {
        op = Op::kNotIn;
        Advance();
      } else {
        break;
      }
      Advance();
      if (!cmp) {
        cmp = Make(ExprKind::kCompare, start);
        cmp->args.push_back(std::move(e));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(ParseMath1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }

  ExprPtr ParseMath1() {
    ExprPtr e = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& at = Cur();
      const Op op = at.text == "+" ? Op::kAdd : Op::kSub;
      Advance();
      e = Binary(op, at, std::move(e), ParseConcat());
    }
    return e;
  }

  ExprPtr ParseConcat() {
    ExprPtr e = ParseMath2();
    while (IsOp("~")) {
      const Token& at = Cur();
      Advance();
      e = Binary(Op::kConcat, at, std::move(e), ParseMath2());
    }
    return e;
  }

  ExprPtr ParseMath2() {
    ExprPtr e = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& at = Cur();
      const Op op = at.text == "*"    ? Op::kMul
                    : at.text == "/"  ? Op::kDiv
                    : at.text == "//" ? Op::kFloorDiv
                                      : Op::kMod;
      Advance();
      e = Binary(op, at, std::move(e), ParsePow());
    }
    return e;
  }

  ExprPtr ParsePow() {
    ExprPtr e = ParseUnary(true);
    while (IsOp("**")) {
      const Token& at = Cur();
      Advance();
      e = Binary(Op::kPow, at, std::move(e), ParseUnary(true));
    }
    return e;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      e = Make(ExprKind::kUnary, Cur());
      e->op = Cur().text == "-" ? Op::kNeg : Op::kPos;
      Advance();
      e->args.push_back(ParseUnary(false));
    } else {
      e = ParsePrimary();
    }
    e = ParsePostfix(std::move(e));
    if (with_filter) e = ParseFilterExpr(std::move(e));
    return e;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Cur();
    switch (t.type) {
      case Tok::kName: {
        auto e = Make(ExprKind::kLiteral, t);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value::Bool(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value::Bool(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::None();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.text;
        }
        Advance();
        return e;
      }
      case Tok::kString: {
        auto e = Make(ExprKind::kLiteral, t);
        std::string s;
        while (Cur().type == Tok::kString) {  // adjacent literals concatenate
          s += Cur().text;
          Advance();
        }
        e->literal = Value::Str(std::move(s));
        return e;
      }
      case Tok::kInt: {
        auto e = Make(ExprKind::kLiteral, t);
        e->literal = Value::Int(t.i);
        Advance();
        return e;
      }
      case Tok::kFloat: {
        auto e = Make(ExprKind::kLiteral, t);
        e->literal = Value::Float(t.f);
        Advance();
        return e;
      }
      case Tok::kOp:
        if (t.text == "(") {
          Advance();
          if (IsOp(")")) {
            auto e = Make(ExprKind::kTuple, t);
            Advance();
            return e;
          }
          ExprPtr e = ParseTupleExpr(true);
          ExpectOp(")");
          return e;
        }
        if (t.text == "[") {
          auto e = Make(ExprKind::kList, t);
          Advance();
          while (!IsOp("]")) {
            e->args.push_back(ParseExpr(true));
            if (!IsOp(",")) break;
            Advance();
          }
          ExpectOp("]");
          return e;
        }
        if (t.text == "{") {
          auto e = Make(ExprKind::kDict, t);
          Advance();
          while (!IsOp("}")) {
            e->args.push_back(ParseExpr(true));
            ExpectOp(":");
            e->args.push_back(ParseExpr(true));
            if (!IsOp(",")) break;
            Advance();
          }
          ExpectOp("}");
          return e;
        }
        break;
      default:
        break;
    }
    Fail(fmt::format("unexpected {}", TokDesc(t)));
  }

  ExprPtr ParsePostfix(ExprPtr e) {
    while (true) {
      const Token& t = Cur();
      if (IsOp(".")) {
        Advance();
        if (Cur().type == Tok::kName) {
          auto g = Make(ExprKind::kGetAttr, t);
          g->name = Cur().text;
          g->args.push_back(std::move(e));
          e = std::move(g);
        } else if (Cur().type == Tok::kInt) {
          auto g = Make(ExprKind::kGetItem, t);
          g->args.push_back(std::move(e));
          auto idx = Make(ExprKind::kLiteral, Cur());
          idx->literal = Value::Int(Cur().i);
          g->args.push_back(std::move(idx));
          e = std::move(g);
        } else {
          Fail(fmt::format("expected an attribute name after '.', got {}", TokDesc(Cur())));
        }
        Advance();
      } else if (IsOp("[")) {
        Advance();
        e = ParseSubscript(std::move(e), t);
      } else if (IsOp("(")) {
        e = ParseCall(std::move(e), t, ExprKind::kCall);
      } else {
        return e;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr obj, const Token& at) {
    ExprPtr parts[3];
    bool is_slice = false;
    if (!IsOp(":")) {
      parts[0] = ParseTupleExpr(true);
      if (!IsOp(":")) {
        ExpectOp("]");
        auto g = Make(ExprKind::kGetItem, at);
        g->args.push_back(std::move(obj));
        g->args.push_back(std::move(parts[0]));
        return g;
      }
    }
    is_slice = true;
    Advance();  // ':'
    if (!IsOp("]") && !IsOp(":")) parts[1] = ParseExpr(true);
    if (IsOp(":")) {
      Advance();
      if (!IsOp("]")) parts[2] = ParseExpr(true);
    }
    ExpectOp("]");
    auto s = Make(ExprKind::kSlice, at);
    s->args.push_back(std::move(obj));
    for (auto& p : parts) s->args.push_back(std::move(p));
    (void)is_slice;
    return s;
  }

  // '(' args ')' after Cur() == '('; args go after `callee` in e->args.
  ExprPtr ParseCall(ExprPtr callee, const Token& at, ExprKind kind, std::string name = "") {
    auto c = Make(kind, at);
    c->name = std::move(name);
    c->args.push_back(std::move(callee));
    ParseArgs(*c);
    return c;
  }

  void ParseArgs(Expr& c) {
    ExpectOp("(");
    while (!IsOp(")")) {
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "=") {
        std::string key = Cur().text;
        Advance();
        Advance();
        c.kwargs.emplace_back(std::move(key), ParseExpr(true));
      } else {
        if (!c.kwargs.empty()) Fail("positional argument follows keyword argument");
        c.args.push_back(ParseExpr(true));
      }
      if (!IsOp(",")) break;
      Advance();
    }
    ExpectOp(")");
  }

  ExprPtr ParseFilterExpr(ExprPtr e) {
    while (true) {
      const Token& t = Cur();
      if (IsOp("|")) {
        Advance();
        auto f = Make(ExprKind::kFilter, t);
        f->name = ExpectIdent("a filter name");
        f->args.push_back(std::move(e));
        if (IsOp("(")) ParseArgs(*f);
        e = std::move(f);
      } else if (IsName("is")) {
        Advance();
        auto test = Make(ExprKind::kTest, t);
        if (IsName("not")) {
          test->negated = true;
          Advance();
        }
        test->name = ExpectIdent("a test name");
        test->args.push_back(std::move(e));
        if (IsOp("(")) {
          ParseArgs(*test);
        } else if ((Cur().type == Tok::kName || Cur().type == Tok::kString ||
                    Cur().type == Tok::kInt || Cur().type == Tok::kFloat || IsOp("(") ||
                    IsOp("[") || IsOp("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and")) {
          if (IsName("is")) Fail("cannot chain multiple tests with 'is'");
          test->args.push_back(ParsePostfix(ParsePrimary()));
        }
        e = std::move(test);
      } else if (IsOp("(")) {
        e = ParseCall(std::move(e), t, ExprKind::kCall);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> toks_;
  const Lexer& lexer_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

std::shared_ptr<Program> ParseProgram(std::string_view source, std::string origin) {
  auto program = std::make_shared<Program>();
  program->origin = std::move(origin);
  const std::string src = NormalizeNewlines(source);
  Lexer lexer(src, program->origin);
  Parser parser(lexer.Run(), lexer);
  program->body = parser.ParseTemplate();
  return program;
}

}  // namespace moe::chat::detail
