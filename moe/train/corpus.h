// A built-in multi-domain text corpus for training tiny MoE language models and watching experts
// specialise. Each sample is one ASCII line of 20..100 bytes from one of a few clearly different
// domains, generated from moe::Rng only (integer draws, no std distributions), so a seed gives the
// same corpus on every platform. Answers are computed, never random:
//   arith    "37+48=85; 93-17=76; 12*7=84"
//   sort     "sort 12 5 88 3 -> 3 5 12 88"
//   reverse  "rev kettle -> elttek"
//   code     "    for (int i = 0; i < 12; ++i) { total += buf[i]; }"
//   units    "3 km = 3000 m, 240 min = 4 h"
//   dates    "2021-03-04 is a Thursday", "2021-03-04 + 10 days = 2021-03-14"
//   english  "The clever fox watched some old sailors near the river."
//   records  {"id": 482, "item": "pen", "qty": 3, "price": 12, "total": 36}
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/rng.h"
#include "moe/train/dataset.h"

namespace moe::train {

inline constexpr int kMinSampleBytes = 20;
inline constexpr int kMaxSampleBytes = 100;

struct Sample {
  int domain = 0;    // index into DomainNames()
  std::string text;  // kMinSampleBytes..kMaxSampleBytes printable ASCII bytes, no newline
};

// Names of the built-in domains; a domain's id is its index.
std::vector<std::string_view> DomainNames();
int NumDomains();
// Id of a domain by name, or -1.
int FindDomain(std::string_view name);

// One sample of `domain` (0 <= domain < NumDomains()), drawing from rng.
Sample GenerateSample(int domain, Rng& rng);

// Train and validation never share a sample text: the sample space is split by a hash of the text
// (a fixed fraction of all possible texts is held out), and the two splits draw from different
// streams of the seed. So validation measures generalisation, e.g. sums never seen in training.
enum class Split { kTrain, kVal };
bool IsHeldOut(std::string_view text, double val_fraction);

struct CorpusOptions {
  uint64_t seed = 1;
  int64_t train_samples = 20000;
  int64_t val_samples = 1000;
  double val_fraction = 0.1;  // share of the sample space held out, in [0.01, 0.5]
  std::vector<int> domains;   // ids to draw from; empty = all
};

// n samples of one split, each from a domain drawn uniformly (random, not round-robin, so the
// previous sample does not give away the next one's domain).
std::vector<Sample> GenerateSplit(const CorpusOptions& opts, Split split);

// GenerateSplit for both splits, as token streams. domain_names lists all built-in domains (labels
// are the built-in ids even when opts.domains selects a few).
Dataset BuiltinDataset(const CorpusOptions& opts);

}  // namespace moe::train
