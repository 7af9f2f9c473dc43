// Token streams, packing into [B, T+1] rows, and user text files as datasets.
#include "moe/train/dataset.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "moe/core/error.h"

namespace moe::train {
namespace {

namespace fs = std::filesystem;

TokenStream Stream(int n_samples) {
  TokenStream s;
  for (int i = 0; i < n_samples; ++i)
    s.Append(i % 3, std::string(5 + i % 4, static_cast<char>('a' + i)));
  return s;
}

TEST(TokenStream, AppendAddsBytesThenSeparatorAllLabelled) {
  TokenStream s;
  s.Append(2, "ab\xff");
  s.Append(0, "");
  EXPECT_EQ(s.tokens, (std::vector<int32_t>{'a', 'b', 255, kSepToken, kSepToken}));
  EXPECT_EQ(s.domains, (std::vector<int32_t>{2, 2, 2, 2, 0}));
  EXPECT_EQ(s.size(), 5);
}

TEST(Packing, SampleBatchRowsAreWindowsOfTheStream) {
  const TokenStream s = Stream(40);
  Rng rng(5), again(5);
  const TokenBatch b = SampleBatch(s, 6, 16, rng);
  ASSERT_EQ(b.batch, 6);
  ASSERT_EQ(b.seq_len, 16);
  ASSERT_EQ(b.tokens.size(), 6u * 17u);
  ASSERT_EQ(b.domains.size(), 6u * 17u);
  for (int64_t r = 0; r < b.batch; ++r) {
    bool found = false;
    for (int64_t start = 0; start + 17 <= s.size() && !found; ++start) {
      found = std::equal(b.row(r), b.row(r) + 17, s.tokens.begin() + start) &&
              std::equal(b.row_domains(r), b.row_domains(r) + 17, s.domains.begin() + start);
    }
    EXPECT_TRUE(found) << "row " << r;
  }
  EXPECT_EQ(SampleBatch(s, 6, 16, again).tokens, b.tokens);
}

TEST(Packing, SampleBatchReachesBothEndsAndChecksItsInputs) {
  TokenStream s;
  s.Append(0, "abcdefgh");  // 9 tokens; T = 7 leaves starts 0 and 1
  Rng rng(1);
  const TokenBatch b = SampleBatch(s, 64, 7, rng);
  bool first = false, last = false;
  for (int64_t r = 0; r < b.batch; ++r) {
    first |= b.row(r)[0] == 'a';
    last |= b.row(r)[7] == kSepToken;
  }
  EXPECT_TRUE(first && last);
  EXPECT_THROW(SampleBatch(s, 1, 9, rng), Error);  // needs 10 tokens
  EXPECT_THROW(SampleBatch(s, 0, 4, rng), Error);
}

TEST(Packing, SequentialRowsMakeEveryTokenATargetOnce) {
  const TokenStream s = Stream(13);
  for (const int64_t t : {1, 4, 7, 16, 1000}) {
    const TokenBatch b = PackSequential(s, t);
    ASSERT_EQ(b.batch, (s.size() - 1 + t - 1) / t) << t;
    std::vector<int32_t> targets, target_domains;
    for (int64_t r = 0; r < b.batch; ++r) {
      if (r > 0) {
        EXPECT_EQ(b.row(r)[0], b.row(r - 1)[t]);  // rows overlap by one token
      }
      for (int64_t i = 1; i <= t; ++i) {
        if (b.row(r)[i] == kPadToken) {
          EXPECT_EQ(b.row_domains(r)[i], kNoDomain);
          continue;
        }
        targets.push_back(b.row(r)[i]);
        target_domains.push_back(b.row_domains(r)[i]);
      }
    }
    EXPECT_EQ(targets, std::vector<int32_t>(s.tokens.begin() + 1, s.tokens.end())) << t;
    EXPECT_EQ(target_domains, std::vector<int32_t>(s.domains.begin() + 1, s.domains.end())) << t;
  }
  EXPECT_EQ(PackSequential(s, 4, 3).batch, 3);
  TokenStream one;
  one.tokens = {kSepToken};
  one.domains = {0};
  EXPECT_THROW(PackSequential(one, 4), Error);
}

class TextFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "moe_textdata_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  // The message of the moe::Error that fn throws ("" if none).
  template <typename Fn>
  static std::string ErrorOf(Fn&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(TextFilesTest, EachFileIsADomainWithItsTailHeldOut) {
  const std::vector<std::string> paths = {Write("poems.txt", "0123456789"),
                                          Write("code.py", std::string(40, 'x') + "yyyy")};
  TextDataOptions opts;
  opts.val_fraction = 0.1;
  const Dataset ds = LoadTextFiles(paths, opts);
  EXPECT_EQ(ds.domain_names, (std::vector<std::string>{"poems.txt", "code.py"}));
  TokenStream train, val;
  train.Append(0, "012345678");
  train.Append(1, std::string(40, 'x'));
  val.Append(0, "9");
  val.Append(1, "yyyy");
  EXPECT_EQ(ds.train.tokens, train.tokens);
  EXPECT_EQ(ds.train.domains, train.domains);
  EXPECT_EQ(ds.val.tokens, val.tokens);
  EXPECT_EQ(ds.val.domains, val.domains);

  opts.val_fraction = 0;
  const Dataset all = LoadTextFiles(paths, opts);
  EXPECT_TRUE(all.val.tokens.empty());
  EXPECT_EQ(all.train.size(), 10 + 44 + 2);
}

TEST_F(TextFilesTest, BadFilesAreClearErrorsNamingTheFile) {
  const std::string ok = Write("ok.txt", std::string(100, 'a'));
  const std::string missing = (dir_ / "missing.txt").string();
  auto load = [&](std::vector<std::string> paths, TextDataOptions opts = {}) {
    return ErrorOf([&] { LoadTextFiles(paths, opts); });
  };
  EXPECT_NE(load({ok, missing}).find(missing), std::string::npos);
  EXPECT_NE(load({ok, missing}).find("no such file"), std::string::npos);
  const std::string empty = Write("empty.txt", "");
  EXPECT_NE(load({empty}).find("empty.txt: file is empty"), std::string::npos);
  EXPECT_NE(load({dir_.string()}).find("not a regular file"), std::string::npos);
  const std::string nul = Write("model.bin", std::string("abc\0def", 7));
  EXPECT_NE(load({nul}).find("NUL byte at offset 3"), std::string::npos);
  TextDataOptions small;
  small.max_file_bytes = 99;
  EXPECT_NE(load({ok}, small).find("100 bytes, over the limit of 99"), std::string::npos);
  small.max_file_bytes = 100;
  small.max_total_bytes = 150;
  const std::string ok2 = Write("ok2.txt", std::string(100, 'b'));
  EXPECT_NE(load({ok, ok2}, small).find("ok2.txt: data files total more than"), std::string::npos);
  fs::create_directory(dir_ / "sub");
  const std::string dup = Write("sub/ok.txt", "abcdefghijkl");
  EXPECT_NE(load({ok, dup}).find("also named 'ok.txt'"), std::string::npos);
  const std::string tiny = Write("tiny.txt", "abc");
  EXPECT_NE(load({tiny}).find("too few to hold out"), std::string::npos);
  EXPECT_NE(load({}).find("no data files"), std::string::npos);
  TextDataOptions bad;
  bad.val_fraction = 1;
  EXPECT_NE(load({ok}, bad).find("val_fraction"), std::string::npos);
}

}  // namespace
}  // namespace moe::train
