#include "moe/tokenizer/bpe.h"

#include <fmt/format.h>

#include <algorithm>
#include <queue>

#include "moe/tokenizer/unicode.h"

namespace moe::tokenizer {

namespace {

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string ByteTokenName(int b) { return fmt::format("<0x{:02X}>", b); }

// A candidate merge of symbols `left` and `right`; stale once either has changed length.
struct Candidate {
  double key;  // rank, or -score: smaller merges first
  int32_t left, right;
  uint32_t left_len, right_len;
  int32_t id;
  bool operator>(const Candidate& o) const { return key != o.key ? key > o.key : left > o.left; }
};

}  // namespace

BpeModel::BpeModel(const TokenizerSpec& spec)
    : scores_(spec.scores),
      use_scores_(spec.merges.empty() && !spec.scores.empty()),
      byte_fallback_(spec.byte_fallback),
      fuse_unk_(spec.fuse_unk),
      ignore_merges_(spec.ignore_merges) {
  vocab_.reserve(spec.vocab.size());
  for (size_t i = 0; i < spec.vocab.size(); ++i)
    vocab_.emplace(spec.vocab[i], static_cast<int32_t>(i));
  if (!use_scores_) {
    merges_.reserve(spec.merges.size());
    for (size_t r = 0; r < spec.merges.size(); ++r) {
      const auto& [a, b] = spec.merges[r];
      const int32_t ia = vocab_.find(a)->second, ib = vocab_.find(b)->second;
      const int32_t id = vocab_.find(a + b)->second;
      // The first (lowest-ranked) occurrence of a pair wins, as in Hugging Face.
      merges_.emplace(PairKey(ia, ib), std::make_pair(static_cast<int32_t>(r), id));
    }
  }
  if (spec.unk_token) unk_id_ = vocab_.find(*spec.unk_token)->second;
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(ByteTokenName(b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

BpeModel::BpeModel(const BpeModel& o)
    : vocab_(o.vocab_),
      merges_(o.merges_),
      scores_(o.scores_),
      use_scores_(o.use_scores_),
      byte_fallback_(o.byte_fallback_),
      fuse_unk_(o.fuse_unk_),
      ignore_merges_(o.ignore_merges_),
      unk_id_(o.unk_id_) {
  std::copy(std::begin(o.byte_ids_), std::end(o.byte_ids_), byte_ids_);
}

std::optional<int32_t> BpeModel::Find(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

bool BpeModel::ByteFallback(std::string_view ch, std::vector<int32_t>& out) const {
  if (!byte_fallback_) return false;
  for (char c : ch)
    if (byte_ids_[static_cast<unsigned char>(c)] < 0) return false;
  for (char c : ch) out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
  return true;
}

void BpeModel::Merge(std::string_view word, std::vector<Symbol>& syms) const {
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t l) {
    const int32_t r = syms[static_cast<size_t>(l)].next;
    if (r < 0) return;
    const Symbol& a = syms[static_cast<size_t>(l)];
    const Symbol& b = syms[static_cast<size_t>(r)];
    if (use_scores_) {
      auto it = vocab_.find(word.substr(a.begin, a.len + b.len));
      if (it == vocab_.end()) return;
      queue.push({-static_cast<double>(scores_[static_cast<size_t>(it->second)]), l, r, a.len,
                  b.len, it->second});
    } else {
      if (a.id < 0 || b.id < 0) return;
      auto it = merges_.find(PairKey(a.id, b.id));
      if (it == merges_.end()) return;
      queue.push({static_cast<double>(it->second.first), l, r, a.len, b.len, it->second.second});
    }
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) consider(static_cast<int32_t>(i));
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& a = syms[static_cast<size_t>(c.left)];
    if (a.len != c.left_len || a.next != c.right) continue;
    Symbol& b = syms[static_cast<size_t>(c.right)];
    if (b.len != c.right_len) continue;
    a.id = c.id;
    a.len += b.len;
    a.next = b.next;
    if (b.next >= 0) syms[static_cast<size_t>(b.next)].prev = c.left;
    b.len = 0;
    b.next = b.prev = -1;
    if (a.prev >= 0) consider(a.prev);
    consider(c.left);
  }
}

void BpeModel::Emit(std::string_view word, const std::vector<Symbol>& syms,
                    std::vector<int32_t>& out) const {
  if (syms.empty()) return;
  // Unknown characters (scores mode): byte fallback, else unk (fused when fuse_unk), else dropped.
  bool pending_unk = false;
  for (int32_t i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
    const Symbol& s = syms[static_cast<size_t>(i)];
    if (s.id >= 0) {
      if (pending_unk) out.push_back(unk_id_);
      pending_unk = false;
      out.push_back(s.id);
      continue;
    }
    const std::string_view ch = word.substr(s.begin, s.len);
    if (ByteFallback(ch, out)) continue;
    if (unk_id_ < 0) continue;
    if (pending_unk && !fuse_unk_) out.push_back(unk_id_);
    pending_unk = true;
  }
  if (pending_unk) out.push_back(unk_id_);
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_ && !use_scores_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();

  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto add = [&](int32_t id, size_t begin, size_t len) {
    const auto n = static_cast<int32_t>(syms.size());
    syms.push_back({id, static_cast<uint32_t>(begin), static_cast<uint32_t>(len), n - 1, -1});
    if (n > 0) syms[static_cast<size_t>(n - 1)].next = n;
  };
  // Pending unknown span (merges mode): [unk_begin, unk_end).
  size_t unk_begin = 0, unk_end = 0;
  bool pending_unk = false;
  auto flush_unk = [&] {
    if (pending_unk) add(unk_id_, unk_begin, unk_end - unk_begin);
    pending_unk = false;
  };
  std::vector<int32_t> bytes;
  for (size_t i = 0; i < word.size();) {
    const size_t len = DecodeUtf8(word, i).len;
    const std::string_view ch = word.substr(i, len);
    auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      flush_unk();
      add(it->second, i, len);
    } else if (use_scores_) {
      add(-1, i, len);  // resolved after merging
    } else if (bytes.clear(), ByteFallback(ch, bytes)) {
      flush_unk();
      for (size_t k = 0; k < bytes.size(); ++k) add(bytes[k], i + k, 1);
    } else if (unk_id_ >= 0) {
      if (pending_unk && fuse_unk_) {
        unk_end = i + len;
      } else {
        flush_unk();
        pending_unk = true;
        unk_begin = i;
        unk_end = i + len;
      }
    }
    i += len;
  }
  flush_unk();
  Merge(word, syms);
  Emit(word, syms, out);

  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word),
                   std::vector<int32_t>(out.begin() + static_cast<ptrdiff_t>(first), out.end()));
  }
}

}  // namespace moe::tokenizer
