// Built-in corpus: every domain's lines are well-formed and their answers correct (checked by
// independent parsers and std::chrono), the stream is pinned per seed, and train/val are disjoint.
#include "moe/train/corpus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe::train {
namespace {

std::vector<Sample> Many(int domain, int n, uint64_t seed = 7) {
  Rng rng(seed);
  std::vector<Sample> out;
  for (int i = 0; i < n; ++i) out.push_back(GenerateSample(domain, rng));
  return out;
}

std::vector<std::string> SplitOn(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t begin = 0;
  for (size_t pos; (pos = s.find(sep, begin)) != std::string::npos; begin = pos + sep.size()) {
    out.push_back(s.substr(begin, pos - begin));
  }
  out.push_back(s.substr(begin));
  return out;
}

std::vector<long> Numbers(const std::string& s) {
  std::istringstream in(s);
  std::vector<long> v;
  for (long x; in >> x;) v.push_back(x);
  return v;
}

TEST(Corpus, HasAtLeastSixUniquelyNamedDomains) {
  const auto names = DomainNames();
  ASSERT_GE(names.size(), 6u);
  EXPECT_EQ(static_cast<int>(names.size()), NumDomains());
  EXPECT_EQ(std::set<std::string_view>(names.begin(), names.end()).size(), names.size());
  for (int d = 0; d < NumDomains(); ++d) EXPECT_EQ(FindDomain(names[static_cast<size_t>(d)]), d);
  EXPECT_EQ(FindDomain("nope"), -1);
  Rng rng(1);
  EXPECT_THROW(GenerateSample(-1, rng), Error);
  EXPECT_THROW(GenerateSample(NumDomains(), rng), Error);
}

TEST(Corpus, EveryLineIsPrintableAsciiWithinTheLengthBounds) {
  for (int d = 0; d < NumDomains(); ++d) {
    std::set<std::string> distinct;
    for (const Sample& s : Many(d, 2000)) {
      ASSERT_EQ(s.domain, d);
      ASSERT_GE(s.text.size(), size_t{kMinSampleBytes}) << s.text;
      ASSERT_LE(s.text.size(), size_t{kMaxSampleBytes}) << s.text;
      for (const char c : s.text) ASSERT_TRUE(c >= 0x20 && c < 0x7f) << s.text;
      distinct.insert(s.text);
    }
    EXPECT_GT(distinct.size(), 1000u) << DomainNames()[static_cast<size_t>(d)];
  }
}

TEST(Corpus, ArithmeticAnswersAreCorrect) {
  for (const Sample& s : Many(FindDomain("arith"), 1000)) {
    const auto eqs = SplitOn(s.text, "; ");
    ASSERT_GE(eqs.size(), 2u) << s.text;
    for (const auto& eq : eqs) {
      long a, b, c;
      char op;
      ASSERT_EQ(std::sscanf(eq.c_str(), "%ld%c%ld=%ld", &a, &op, &b, &c), 4) << eq;
      const long want = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : -1;
      ASSERT_TRUE(op == '+' || op == '-' || op == '*') << eq;
      ASSERT_EQ(c, want) << eq;
    }
  }
}

TEST(Corpus, SortOutputIsTheSortedInput) {
  for (const Sample& s : Many(FindDomain("sort"), 1000)) {
    ASSERT_EQ(s.text.rfind("sort ", 0), 0u) << s.text;
    const auto parts = SplitOn(s.text.substr(5), " -> ");
    ASSERT_EQ(parts.size(), 2u) << s.text;
    auto in = Numbers(parts[0]);
    const auto out = Numbers(parts[1]);
    std::sort(in.begin(), in.end());
    ASSERT_EQ(in, out) << s.text;
  }
}

TEST(Corpus, ReverseOutputIsTheReversedWord) {
  for (const Sample& s : Many(FindDomain("reverse"), 1000)) {
    ASSERT_EQ(s.text.rfind("rev ", 0), 0u) << s.text;
    const auto parts = SplitOn(s.text.substr(4), " -> ");
    ASSERT_EQ(parts.size(), 2u) << s.text;
    ASSERT_EQ(std::string(parts[0].rbegin(), parts[0].rend()), parts[1]) << s.text;
  }
}

TEST(Corpus, UnitConversionsAreExact) {
  const std::map<std::pair<std::string, std::string>, long> factor = {
      {{"km", "m"}, 1000},  {{"m", "cm"}, 100},  {{"cm", "mm"}, 10}, {{"kg", "g"}, 1000},
      {{"t", "kg"}, 1000},  {{"h", "min"}, 60},  {{"min", "s"}, 60}, {{"day", "h"}, 24},
      {{"week", "day"}, 7}, {{"l", "ml"}, 1000}, {{"ft", "in"}, 12}, {{"yd", "ft"}, 3}};
  for (const Sample& s : Many(FindDomain("units"), 1000)) {
    for (const auto& conv : SplitOn(s.text, ", ")) {
      long a, b;
      char u[16], v[16];
      ASSERT_EQ(std::sscanf(conv.c_str(), "%ld %15s = %ld %15s", &a, u, &b, v), 4) << conv;
      if (auto it = factor.find({u, v}); it != factor.end()) {
        ASSERT_EQ(a * it->second, b) << conv;
      } else {
        ASSERT_TRUE(factor.count({v, u})) << conv;
        ASSERT_EQ(b * factor.at({v, u}), a) << conv;
      }
    }
  }
}

std::chrono::sys_days ParseDate(const std::string& s) {
  int y = 0;
  unsigned m = 0, d = 0;
  EXPECT_EQ(std::sscanf(s.c_str(), "%d-%u-%u", &y, &m, &d), 3) << s;
  const std::chrono::year_month_day ymd{std::chrono::year{y}, std::chrono::month{m},
                                        std::chrono::day{d}};
  EXPECT_TRUE(ymd.ok()) << s;
  return std::chrono::sys_days{ymd};
}

TEST(Corpus, DatesAgreeWithStdChrono) {
  const char* kNames[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                          "Thursday", "Friday", "Saturday"};
  int forms = 0;
  for (const Sample& s : Many(FindDomain("dates"), 2000)) {
    const std::string& t = s.text;
    char d1[16], d2[16], word[16];
    long n = 0;
    if (t.find(" is a ") != std::string::npos) {
      ASSERT_EQ(std::sscanf(t.c_str(), "%15s is a %15s", d1, word), 2) << t;
      const std::chrono::weekday wd{ParseDate(d1)};
      ASSERT_STREQ(word, kNames[wd.c_encoding()]) << t;
      forms |= 1;
    } else if (t.rfind("days from ", 0) == 0) {
      ASSERT_EQ(std::sscanf(t.c_str(), "days from %15s to %15s %ld", d1, d2, &n), 3) << t;
      d1[10] = d2[10] = '\0';  // drop the ':' after the second date
      ASSERT_EQ((ParseDate(d2) - ParseDate(d1)).count(), n) << t;
      forms |= 2;
    } else {
      char op = 0;
      ASSERT_EQ(std::sscanf(t.c_str(), "%15s %c %ld %15s = %15s", d1, &op, &n, word, d2), 5) << t;
      ASSERT_STREQ(word, n == 1 ? "day" : "days") << t;
      const auto want =
          op == '+' ? ParseDate(d1) + std::chrono::days{n} : ParseDate(d1) - std::chrono::days{n};
      ASSERT_EQ(ParseDate(d2), want) << t;
      forms |= op == '+' ? 4 : 8;
    }
  }
  EXPECT_EQ(forms, 15);
}

TEST(Corpus, RecordsAreJsonWithCorrectTotals) {
  for (const Sample& s : Many(FindDomain("records"), 1000)) {
    const auto j = nlohmann::json::parse(s.text);
    ASSERT_EQ(j.at("total").get<long>(), j.at("qty").get<long>() * j.at("price").get<long>())
        << s.text;
    ASSERT_TRUE(j.at("item").is_string());
  }
}

TEST(Corpus, EnglishSentencesAreCapitalisedWords) {
  for (const Sample& s : Many(FindDomain("english"), 1000)) {
    ASSERT_TRUE(std::isupper(static_cast<unsigned char>(s.text[0]))) << s.text;
    ASSERT_EQ(s.text.back(), '.') << s.text;
    for (size_t i = 0; i + 1 < s.text.size(); ++i) {
      ASSERT_TRUE(std::isalpha(static_cast<unsigned char>(s.text[i])) || s.text[i] == ' ')
          << s.text;
    }
    EXPECT_EQ(s.text.find("  "), std::string::npos) << s.text;
    EXPECT_EQ(s.text.find(" a a"), std::string::npos) << s.text;  // "a" before a vowel is "an"
    EXPECT_EQ(s.text.find(" a o"), std::string::npos) << s.text;
  }
}

TEST(Corpus, CodeLinesHaveBalancedBracketsAndIndentation) {
  std::set<size_t> indents;
  for (const Sample& s : Many(FindDomain("code"), 1000)) {
    std::string stack;
    for (const char c : s.text) {
      if (c == '(' || c == '[' || c == '{') stack += c;
      if (c == ')' || c == ']' || c == '}') {
        ASSERT_FALSE(stack.empty()) << s.text;
        ASSERT_EQ(stack.back(), c == ')' ? '(' : c == ']' ? '[' : '{') << s.text;
        stack.pop_back();
      }
    }
    ASSERT_TRUE(stack.empty()) << s.text;
    ASSERT_EQ(std::count(s.text.begin(), s.text.end(), '"') % 2, 0) << s.text;
    indents.insert(s.text.find_first_not_of(' '));
  }
  EXPECT_EQ(indents, (std::set<size_t>{0, 4, 8}));
}

uint64_t Fnv(const std::vector<Sample>& samples) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const Sample& s : samples) {
    for (const char c : std::to_string(s.domain) + ":" + s.text + "\n") {
      h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    }
  }
  return h;
}

TEST(Corpus, PinnedOutputForSeedOne) {
  // Pins the generator: the same seed gives the same corpus on every platform and build. A
  // deliberate change to a generator must update these values (and says so in its commit).
  CorpusOptions opts;
  opts.train_samples = 500;
  opts.val_samples = 100;
  const auto train = GenerateSplit(opts, Split::kTrain);
  const auto val = GenerateSplit(opts, Split::kVal);
  EXPECT_EQ(train[0].text, "84-41=43; 748-100=648; 718+902=1620");
  EXPECT_EQ(val[0].text, "Every angry dog carried these mice under the station.");
  EXPECT_EQ(Fnv(train), 0x7f8f7f1f274482e4ULL);
  EXPECT_EQ(Fnv(val), 0x416106aa64c0437bULL);
}

TEST(Corpus, SplitsAreDeterministicDisjointAndBalanced) {
  CorpusOptions opts;
  opts.seed = 3;
  opts.train_samples = 8000;
  opts.val_samples = 800;
  const auto train = GenerateSplit(opts, Split::kTrain);
  const auto val = GenerateSplit(opts, Split::kVal);
  ASSERT_EQ(train.size(), 8000u);
  ASSERT_EQ(val.size(), 800u);
  EXPECT_EQ(Fnv(train), Fnv(GenerateSplit(opts, Split::kTrain)));
  std::set<std::string> train_texts;
  std::vector<int> per_domain(static_cast<size_t>(NumDomains()));
  for (const Sample& s : train) {
    train_texts.insert(s.text);
    EXPECT_FALSE(IsHeldOut(s.text, opts.val_fraction));
    ++per_domain[static_cast<size_t>(s.domain)];
  }
  for (const Sample& s : val) {
    EXPECT_EQ(train_texts.count(s.text), 0u) << s.text;
    EXPECT_TRUE(IsHeldOut(s.text, opts.val_fraction));
  }
  for (const int c : per_domain) {  // 1000 expected each; 5 sigma is about +-150
    EXPECT_GT(c, 850);
    EXPECT_LT(c, 1150);
  }
  opts.seed = 4;
  EXPECT_NE(Fnv(train), Fnv(GenerateSplit(opts, Split::kTrain)));
}

TEST(Corpus, DomainSubsetAndBadOptions) {
  CorpusOptions opts;
  opts.train_samples = 200;
  opts.domains = {FindDomain("sort"), FindDomain("dates")};
  for (const Sample& s : GenerateSplit(opts, Split::kTrain)) {
    EXPECT_TRUE(s.domain == opts.domains[0] || s.domain == opts.domains[1]);
  }
  opts.domains = {NumDomains()};
  EXPECT_THROW(GenerateSplit(opts, Split::kTrain), Error);
  opts.domains.clear();
  opts.val_fraction = 0;
  EXPECT_THROW(GenerateSplit(opts, Split::kVal), Error);
  opts.val_fraction = 0.1;
  opts.train_samples = -1;
  EXPECT_THROW(GenerateSplit(opts, Split::kTrain), Error);
}

TEST(Corpus, BuiltinDatasetStreamsEndEverySampleWithASeparator) {
  CorpusOptions opts;
  opts.train_samples = 300;
  opts.val_samples = 50;
  const Dataset ds = BuiltinDataset(opts);
  ASSERT_EQ(static_cast<int>(ds.domain_names.size()), NumDomains());
  const auto samples = GenerateSplit(opts, Split::kTrain);
  TokenStream want;
  for (const Sample& s : samples) want.Append(s.domain, s.text);
  EXPECT_EQ(ds.train.tokens, want.tokens);
  EXPECT_EQ(ds.train.domains, want.domains);
  EXPECT_EQ(std::count(ds.val.tokens.begin(), ds.val.tokens.end(), kSepToken), 50);
  EXPECT_EQ(ds.val.tokens.back(), kSepToken);
  for (const int32_t d : ds.val.domains) EXPECT_TRUE(d >= 0 && d < NumDomains());
}

}  // namespace
}  // namespace moe::train
