// `moe corpus`: prints samples of the built-in training corpus, the same ones `moe train` sees for
// that seed and split.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <string>

#include "moe/core/error.h"
#include "moe/train/corpus.h"
#include "tools/commands.h"

namespace moe::cli {
namespace {

struct CorpusOptions {
  std::string domain = "all";
  int64_t n = 10;
  uint64_t seed = 1;
  std::string split = "train";
};

void RunCorpus(const CorpusOptions& opt) {
  train::CorpusOptions co;
  co.seed = opt.seed;
  co.train_samples = co.val_samples = opt.n;
  if (opt.domain != "all") {
    const int d = train::FindDomain(opt.domain);
    if (d < 0) {
      Fail("corpus", "unknown domain '{}'; expected all or one of: {}", opt.domain,
           fmt::join(train::DomainNames(), ", "));
    }
    co.domains = {d};
  }
  const auto split = opt.split == "val" ? train::Split::kVal : train::Split::kTrain;
  const auto names = train::DomainNames();
  for (const train::Sample& s : train::GenerateSplit(co, split)) {
    fmt::print("{:<8} {}\n", names[static_cast<size_t>(s.domain)], s.text);
  }
}

}  // namespace

void AddCorpusCommand(CLI::App& root) {
  auto opt = std::make_shared<CorpusOptions>();
  auto* cmd = root.add_subcommand("corpus", "Print samples of the built-in training corpus");
  cmd->add_option("--domain,-d", opt->domain,
                  fmt::format("all, or one of: {}", fmt::join(train::DomainNames(), ", ")))
      ->capture_default_str();
  cmd->add_option("--n,-n", opt->n, "Number of samples")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--seed", opt->seed, "Corpus seed")->capture_default_str();
  cmd->add_option("--split", opt->split, "Which split to draw from")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "val"}));
  cmd->callback([opt] { RunCorpus(*opt); });
}

}  // namespace moe::cli
