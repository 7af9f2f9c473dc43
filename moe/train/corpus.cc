#include "moe/train/corpus.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <span>

#include "moe/core/error.h"

namespace moe::train {
namespace {

constexpr std::string_view kTag = "corpus";

constexpr std::array<std::string_view, 8> kDomainNames = {
    "arith", "sort", "reverse", "code", "units", "dates", "english", "records",
};

// Uniform integer in [lo, hi].
int64_t Int(Rng& r, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(r.Below(static_cast<uint64_t>(hi - lo + 1)));
}

template <typename T, size_t N>
const T& Pick(Rng& r, const std::array<T, N>& items) {
  return items[r.Below(N)];
}

// --- arith: "37+48=85; 93-17=76; 12*7=84" ------------------------------------------------------
std::string Arith(Rng& r) {
  std::string s;
  const int64_t target = Int(r, 2, 4);
  for (int64_t n = 0; n < target || static_cast<int>(s.size()) < kMinSampleBytes; ++n) {
    if (n > 0) s += "; ";
    switch (r.Below(3)) {
      case 0: {
        const int64_t a = Int(r, 0, 999), b = Int(r, 0, 999);
        s += fmt::format("{}+{}={}", a, b, a + b);
        break;
      }
      case 1: {
        const int64_t a = Int(r, 0, 999), b = Int(r, 0, a);
        s += fmt::format("{}-{}={}", a, b, a - b);
        break;
      }
      default: {
        const int64_t a = Int(r, 2, 99), b = Int(r, 2, 12);
        s += fmt::format("{}*{}={}", a, b, a * b);
        break;
      }
    }
  }
  return s;
}

// --- sort: "sort 12 5 88 3 -> 3 5 12 88" ---------------------------------------------------------
std::string Sort(Rng& r) {
  std::vector<int64_t> v(static_cast<size_t>(Int(r, 4, 8)));
  for (auto& x : v) x = Int(r, 0, 99);
  std::string s = fmt::format("sort {} ->", fmt::join(v, " "));
  std::sort(v.begin(), v.end());
  s += fmt::format(" {}", fmt::join(v, " "));
  return s;
}

// --- reverse: "rev kettle -> elttek" -------------------------------------------------------------
std::string Reverse(Rng& r) {
  std::string w(static_cast<size_t>(Int(r, 6, 20)), 'a');
  for (char& c : w) c = static_cast<char>('a' + r.Below(26));
  std::string rw(w.rbegin(), w.rend());
  return fmt::format("rev {} -> {}", w, rw);
}

// --- code: one C- or Python-like statement with indentation --------------------------------------
std::string Code(Rng& r) {
  static constexpr std::array<std::string_view, 14> kVars = {
      "x",   "y",     "n",    "count", "total", "idx", "buf",
      "key", "value", "left", "right", "size",  "acc", "pos"};
  static constexpr std::array<std::string_view, 9> kFuncs = {
      "f", "step", "update", "parse", "load", "emit", "check", "merge", "scale"};
  const std::string ind(4 * r.Below(3), ' ');
  const std::string_view v = Pick(r, kVars);
  std::string_view w = Pick(r, kVars);
  while (w == v) w = Pick(r, kVars);
  const std::string_view f = Pick(r, kFuncs);
  const int64_t a = Int(r, 0, 99), b = Int(r, 2, 9), c = a + Int(r, 1, 50);
  switch (r.Below(12)) {
    case 0:
      return fmt::format("{}int {} = {} * {} + {};", ind, v, w, b, a);
    case 1:
      return fmt::format("{}for (int i = 0; i < {}; ++i) {{ {} += {}[i]; }}", ind, a, v, w);
    case 2:
      return fmt::format("{}if ({} > {}) {{ return {}; }}", ind, v, a, w);
    case 3:
      return fmt::format("{}while ({} != 0) {{ {} = {} / {}; }}", ind, v, v, v, b);
    case 4:
      return fmt::format("{}{}(&{}, {}, {});", ind, f, v, w, a);
    case 5:
      return fmt::format("{}{}[{}] = {} % {};", ind, v, a, w, b);
    case 6:
      return fmt::format("{}def {}({}, {}={}):", ind, f, v, w, a);
    case 7:
      return fmt::format("{}for {} in range({}, {}):", ind, v, a, c);
    case 8:
      return fmt::format("{}if {} == {} and {} < {}:", ind, v, a, w, c);
    case 9:
      return fmt::format("{}{} = [{} * {} for {} in {}({})]", ind, v, w, b, w, f, a);
    case 10:
      return fmt::format("{}return {} + {} * {}", ind, v, w, b);
    default:
      return fmt::format("{}print(\"{} =\", {}, {})", ind, v, v, w);
  }
}

// --- units: "3 km = 3000 m, 240 min = 4 h" (integers only, so every line is exact)
// ----------------
std::string Units(Rng& r) {
  struct Unit {
    std::string_view big, small;
    int64_t factor;
  };
  static constexpr std::array<Unit, 12> kUnits = {{
      {"km", "m", 1000},
      {"m", "cm", 100},
      {"cm", "mm", 10},
      {"kg", "g", 1000},
      {"t", "kg", 1000},
      {"h", "min", 60},
      {"min", "s", 60},
      {"day", "h", 24},
      {"week", "day", 7},
      {"l", "ml", 1000},
      {"ft", "in", 12},
      {"yd", "ft", 3},
  }};
  std::string s;
  for (int n = 0; n < 2 || static_cast<int>(s.size()) < kMinSampleBytes; ++n) {
    if (n > 0) s += ", ";
    const Unit& u = Pick(r, kUnits);
    const int64_t k = Int(r, 1, 99);
    if (r.Below(2) == 0) {
      s += fmt::format("{} {} = {} {}", k, u.big, k * u.factor, u.small);
    } else {
      s += fmt::format("{} {} = {} {}", k * u.factor, u.small, k, u.big);
    }
  }
  return s;
}

// --- dates: proleptic Gregorian calendar via days since 1970-01-01 (H. Hinnant's algorithms)
// ------
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;                                    // [0, 399]
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;  // [0, 365]
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;            // [0, 146096]
  return era * 146097 + doe - 719468;
}

std::string CivilString(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return fmt::format("{:04d}-{:02d}-{:02d}", y, m, d);
}

std::string_view Weekday(int64_t z) {
  static constexpr std::array<std::string_view, 7> kDays = {
      "Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"};
  return kDays[static_cast<size_t>(((z % 7) + 7) % 7)];  // day 0 = 1970-01-01, a Thursday
}

std::string Dates(Rng& r) {
  const int64_t z = Int(r, DaysFromCivil(1950, 1, 1), DaysFromCivil(2049, 12, 31));
  const int64_t n = Int(r, 1, 1000);
  const std::string_view days = n == 1 ? "day" : "days";
  switch (r.Below(4)) {
    case 0:
      return fmt::format("{} is a {}", CivilString(z), Weekday(z));
    case 1:
      return fmt::format("{} + {} {} = {}", CivilString(z), n, days, CivilString(z + n));
    case 2:
      return fmt::format("{} - {} {} = {}", CivilString(z), n, days, CivilString(z - n));
    default:
      return fmt::format("days from {} to {}: {}", CivilString(z), CivilString(z + n), n);
  }
}

// --- english: sentences from a small grammar with number agreement ------------------------------
std::string English(Rng& r) {
  struct Noun {
    std::string_view one, many;
  };
  struct Verb {
    std::string_view base, third, past;
  };
  static constexpr std::array<Noun, 16> kNouns = {{
      {"fox", "foxes"},
      {"dog", "dogs"},
      {"teacher", "teachers"},
      {"child", "children"},
      {"farmer", "farmers"},
      {"bird", "birds"},
      {"city", "cities"},
      {"king", "kings"},
      {"robot", "robots"},
      {"sailor", "sailors"},
      {"doctor", "doctors"},
      {"cat", "cats"},
      {"mouse", "mice"},
      {"wolf", "wolves"},
      {"owl", "owls"},
      {"artist", "artists"},
  }};
  static constexpr std::array<Verb, 12> kVerbs = {{
      {"see", "sees", "saw"},
      {"follow", "follows", "followed"},
      {"like", "likes", "liked"},
      {"find", "finds", "found"},
      {"watch", "watches", "watched"},
      {"help", "helps", "helped"},
      {"visit", "visits", "visited"},
      {"chase", "chases", "chased"},
      {"teach", "teaches", "taught"},
      {"carry", "carries", "carried"},
      {"paint", "paints", "painted"},
      {"greet", "greets", "greeted"},
  }};
  static constexpr std::array<std::string_view, 14> kAdjs = {
      "small", "quick",  "old",  "green",  "quiet",  "happy",   "brave",
      "lazy",  "bright", "tiny", "clever", "gentle", "ancient", "angry"};
  static constexpr std::array<std::string_view, 4> kDetOne = {"the", "a", "this", "every"};
  static constexpr std::array<std::string_view, 6> kDetMany = {"the",   "some", "many",
                                                               "these", "two",  "three"};
  static constexpr std::array<std::string_view, 6> kPreps = {"near",   "behind", "under",
                                                             "across", "beside", "past"};
  static constexpr std::array<std::string_view, 10> kPlaces = {
      "river",  "bridge", "market",  "forest", "school",
      "harbor", "hill",   "station", "garden", "castle"};
  auto noun_phrase = [&](bool plural) {
    std::string_view det = plural ? Pick(r, kDetMany) : Pick(r, kDetOne);
    std::string rest;
    if (r.Below(2) == 0) rest = fmt::format("{} ", Pick(r, kAdjs));
    const Noun& n = Pick(r, kNouns);
    rest += plural ? n.many : n.one;
    if (det == "a" && std::string_view("aeiou").find(rest[0]) != std::string_view::npos) det = "an";
    return fmt::format("{} {}", det, rest);
  };
  const bool plural = r.Below(2) == 0;
  std::string s = noun_phrase(plural);
  const Verb& v = Pick(r, kVerbs);
  s += fmt::format(" {} ", r.Below(2) == 0 ? v.past : plural ? v.base : v.third);
  s += noun_phrase(r.Below(2) == 0);
  if (r.Below(2) == 0) s += fmt::format(" {} the {}", Pick(r, kPreps), Pick(r, kPlaces));
  s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  s += '.';
  return s;
}

// --- records: {"id": 482, "item": "pen", "qty": 3, "price": 12, "total": 36} --------------------
std::string Records(Rng& r) {
  static constexpr std::array<std::string_view, 12> kItems = {"pen",   "book",   "lamp", "cup",
                                                              "chair", "rope",   "bolt", "tile",
                                                              "brush", "kettle", "map",  "saw"};
  const int64_t id = Int(r, 1, 9999), qty = Int(r, 1, 20), price = Int(r, 1, 99);
  return fmt::format(R"({{"id": {}, "item": "{}", "qty": {}, "price": {}, "total": {}}})", id,
                     Pick(r, kItems), qty, price, qty * price);
}

using Generator = std::string (*)(Rng&);
constexpr std::array<Generator, kDomainNames.size()> kGenerators = {
    Arith, Sort, Reverse, Code, Units, Dates, English, Records,
};

uint64_t HashText(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a, then the splitmix64 finaliser to mix the top bits
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

}  // namespace

std::vector<std::string_view> DomainNames() { return {kDomainNames.begin(), kDomainNames.end()}; }

int NumDomains() { return static_cast<int>(kDomainNames.size()); }

int FindDomain(std::string_view name) {
  const auto it = std::find(kDomainNames.begin(), kDomainNames.end(), name);
  return it == kDomainNames.end() ? -1 : static_cast<int>(it - kDomainNames.begin());
}

Sample GenerateSample(int domain, Rng& rng) {
  MOE_CHECK(domain >= 0 && domain < NumDomains(), kTag, "domain {} is not in [0, {})", domain,
            NumDomains());
  Sample s{domain, {}};
  // The rare line outside the length bounds (e.g. a short sentence) is drawn again.
  do {
    s.text = kGenerators[static_cast<size_t>(domain)](rng);
  } while (static_cast<int>(s.text.size()) < kMinSampleBytes ||
           static_cast<int>(s.text.size()) > kMaxSampleBytes);
  return s;
}

bool IsHeldOut(std::string_view text, double val_fraction) {
  return static_cast<double>(HashText(text) >> 11) * 0x1.0p-53 < val_fraction;
}

std::vector<Sample> GenerateSplit(const CorpusOptions& opts, Split split) {
  MOE_CHECK(opts.val_fraction >= 0.01 && opts.val_fraction <= 0.5, kTag,
            "val_fraction {} must be in [0.01, 0.5]", opts.val_fraction);
  std::vector<int> domains = opts.domains;
  if (domains.empty()) {
    for (int d = 0; d < NumDomains(); ++d) domains.push_back(d);
  }
  for (const int d : domains) {
    MOE_CHECK(d >= 0 && d < NumDomains(), kTag, "domain {} is not in [0, {})", d, NumDomains());
  }
  const int64_t n = split == Split::kTrain ? opts.train_samples : opts.val_samples;
  MOE_CHECK(n >= 0 && n <= (int64_t{1} << 26), kTag, "{} samples requested; expected 0..{}", n,
            int64_t{1} << 26);
  Rng streams(opts.seed);
  const uint64_t train_seed = streams.Next();
  const uint64_t val_seed = streams.Next();
  Rng rng(split == Split::kTrain ? train_seed : val_seed);
  const bool want_held_out = split == Split::kVal;
  std::vector<Sample> out;
  out.reserve(static_cast<size_t>(n));
  while (static_cast<int64_t>(out.size()) < n) {
    Sample s = GenerateSample(domains[rng.Below(domains.size())], rng);
    if (IsHeldOut(s.text, opts.val_fraction) == want_held_out) out.push_back(std::move(s));
  }
  return out;
}

Dataset BuiltinDataset(const CorpusOptions& opts) {
  Dataset ds;
  for (const std::string_view name : kDomainNames) ds.domain_names.emplace_back(name);
  for (const Sample& s : GenerateSplit(opts, Split::kTrain)) ds.train.Append(s.domain, s.text);
  for (const Sample& s : GenerateSplit(opts, Split::kVal)) ds.val.Append(s.domain, s.text);
  return ds;
}

}  // namespace moe::train
