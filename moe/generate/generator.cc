#include "moe/generate/generator.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/kernels/roofline.h"

namespace moe::generate {
namespace {

constexpr const char* kTag = "generate";
constexpr int64_t kDefaultContext = 4096;

// Length of the longest suffix of `text` that is a proper prefix of some stop string: output that
// must be held back because the next token may complete a stop string.
size_t HeldSuffix(std::string_view text, const std::vector<std::string>& stop) {
  size_t held = 0;
  for (const std::string& s : stop) {
    const size_t most = std::min(text.size(), s.size() - 1);
    for (size_t len = most; len > held; --len)
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        held = len;
        break;
      }
  }
  return held;
}

}  // namespace

void GenerateOptions::Validate() const {
  sampler.Validate();
  MOE_CHECK(max_tokens >= 0, kTag, "max_tokens = {} must be >= 0", max_tokens);
  MOE_CHECK(prefill_chunk >= 1, kTag, "prefill_chunk = {} must be >= 1", prefill_chunk);
  for (const std::string& s : stop) MOE_CHECK(!s.empty(), kTag, "a stop string is empty");
}

std::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStopId:
      return "eos";
    case FinishReason::kStopString:
      return "stop";
    case FinishReason::kContext:
      return "context";
  }
  return "?";
}

void RoutingTrace::Begin(const int32_t* tokens, int64_t n, int64_t pos0, bool generated) {
  tokens_.assign(tokens, tokens + n);
  pos0_ = pos0;
  generated_ = generated;
}

std::function<void(int64_t, const mixture::RoutingPlan<float>&)> RoutingTrace::Hook() {
  return [this](int64_t layer, const mixture::RoutingPlan<float>& plan) { OnPlan(layer, plan); };
}

void RoutingTrace::OnPlan(int64_t layer, const mixture::RoutingPlan<float>& plan) {
  MOE_CHECK(plan.num_tokens == static_cast<int64_t>(tokens_.size()), kTag,
            "routing trace: a plan of {} tokens for a call of {}", plan.num_tokens, tokens_.size());
  line_.clear();
  for (int64_t t = 0; t < plan.num_tokens; ++t) {
    nlohmann::json j;
    j["phase"] = generated_ ? "generated" : "prompt";
    j["pos"] = pos0_ + t;
    const int32_t id = tokens_[static_cast<size_t>(t)];
    j["token"] = id;
    if (tok_ != nullptr) {
      const int32_t one[1] = {id};
      // Replacement characters keep the JSON valid for tokens that are parts of a character.
      j["text"] = tok_->Decode(one, false);
    }
    j["layer"] = layer;
    std::vector<int32_t> experts;
    std::vector<float> gates;
    for (int64_t a = plan.token_offsets[static_cast<size_t>(t)];
         a < plan.token_offsets[static_cast<size_t>(t) + 1]; ++a) {
      const size_t p = static_cast<size_t>(plan.token_assign[static_cast<size_t>(a)]);
      experts.push_back(plan.expert[p]);
      gates.push_back(plan.gate[p]);
    }
    j["experts"] = experts;
    j["gates"] = gates;
    line_ += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line_.push_back('\n');
    ++lines_;
  }
  sink_(line_);
}

Generator::Generator(const model::Transformer& tf, const model::ModelWeights& w,
                     const tokenizer::Tokenizer& tok, Context& ctx, int64_t context)
    : tf_(tf), w_(w), tok_(tok), ctx_(ctx) {
  const int64_t max_seq = tf.config().max_seq;
  MOE_CHECK(context >= 0, kTag, "context = {} must be >= 0", context);
  int64_t cap = context > 0 ? context : std::min(max_seq, kDefaultContext);
  MOE_CHECK(cap <= max_seq, kTag,
            "context = {} is longer than the model's max_position_embeddings = {}", cap, max_seq);
  cache_.Allocate(tf.config(), cap);
}

void Generator::Reset() {
  cache_.Clear();
  history_.clear();
}

void Generator::Run(const int32_t* tokens, int64_t n, bool all_logits, bool generated,
                    RoutingTrace* trace) {
  if (trace != nullptr) {
    trace->Begin(tokens, n, cache_.length, generated);
    st_.on_route = trace->Hook();
  } else {
    st_.on_route = nullptr;
  }
  tf_.Infer(w_, tokens, n, cache_, st_, ctx_, all_logits);
  history_.insert(history_.end(), tokens, tokens + n);
}

GenerateResult Generator::Generate(std::span<const int32_t> prompt, const GenerateOptions& opt,
                                   const std::function<void(std::string_view)>& on_text,
                                   RoutingTrace* trace) {
  opt.Validate();
  const int64_t np = static_cast<int64_t>(prompt.size());
  MOE_CHECK(np >= 1, kTag, "the prompt is empty (no tokens)");
  MOE_CHECK(np < cache_.capacity, kTag,
            "the prompt has {} tokens; the context holds {} (raise it with --ctx-size, at most the "
            "model's {})",
            np, cache_.capacity, tf_.config().max_seq);
  const int32_t vocab = static_cast<int32_t>(tf_.config().vocab_size);
  for (int64_t i = 0; i < np; ++i)
    MOE_CHECK(prompt[static_cast<size_t>(i)] >= 0 && prompt[static_cast<size_t>(i)] < vocab, kTag,
              "prompt token {} = {} is outside the vocabulary [0, {})", i,
              prompt[static_cast<size_t>(i)], vocab);
  GenerateResult r;
  r.prompt_tokens = np;

  // Reuse the cached prefix; at least the last prompt token runs so that its logits exist.
  size_t common = 0;
  while (common < history_.size() && common < prompt.size() && history_[common] == prompt[common])
    ++common;
  common = std::min(common, prompt.size() - 1);
  cache_.length = static_cast<int64_t>(common);
  history_.resize(common);

  const double t0 = kernels::NowSeconds();
  // The pages of every position this call can reach, committed in one pass per kv head rather
  // than one fault at a time inside the decode steps.
  cache_.Reserve(np + std::min(opt.max_tokens, cache_.capacity));
  for (size_t i = common; i < prompt.size();) {
    const size_t n = std::min<size_t>(static_cast<size_t>(opt.prefill_chunk), prompt.size() - i);
    Run(prompt.data() + i, static_cast<int64_t>(n), false, false, trace);
    i += n;
  }
  r.prefill_tokens = np - static_cast<int64_t>(common);
  r.prefill_s = kernels::NowSeconds() - t0;

  Sampler sampler(opt.sampler);
  tokenizer::StreamDecoder dec(tok_, true);
  std::string text;    // decoded output so far
  size_t emitted = 0;  // of text, handed to on_text
  std::vector<int32_t> seen(prompt.begin(), prompt.end());
  size_t max_stop = 0;
  for (const std::string& s : opt.stop) max_stop = std::max(max_stop, s.size());
  const double t1 = kernels::NowSeconds();
  bool stopped = false;
  while (!stopped) {
    if (static_cast<int64_t>(r.tokens.size()) >= opt.max_tokens) {
      r.finish = FinishReason::kLength;
      break;
    }
    const auto lv = st_.logits.view<const float>();
    const int32_t next = sampler.Sample({lv.data, static_cast<size_t>(lv.numel())}, seen);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) {
      r.finish = FinishReason::kStopId;
      break;
    }
    r.tokens.push_back(next);
    seen.push_back(next);
    text += dec.Push(next);
    // A stop string may start up to max_stop - 1 bytes before the text that is new.
    if (max_stop > 0) {
      const size_t from = emitted > max_stop ? emitted - max_stop : 0;
      size_t cut = std::string::npos;
      for (const std::string& s : opt.stop) cut = std::min(cut, text.find(s, from));
      if (cut != std::string::npos) {
        text.resize(cut);
        r.finish = FinishReason::kStopString;
        stopped = true;
      }
    }
    if (!stopped) {
      if (cache_.length >= cache_.capacity) {
        r.finish = FinishReason::kContext;
        break;
      }
      Run(&r.tokens.back(), 1, false, true, trace);
      ++r.decode_tokens;
    }
    const size_t safe = stopped ? text.size() : text.size() - HeldSuffix(text, opt.stop);
    if (on_text && safe > emitted) on_text(std::string_view(text).substr(emitted, safe - emitted));
    emitted = std::max(emitted, safe);
  }
  if (!stopped) {
    text += dec.Flush();
    if (on_text && text.size() > emitted) on_text(std::string_view(text).substr(emitted));
  }
  r.decode_s = kernels::NowSeconds() - t1;
  r.text = std::move(text);
  return r;
}

void Generator::Score(std::span<const int32_t> tokens, int64_t chunk,
                      const std::function<void(int64_t, int64_t, const float*)>& on_chunk) {
  MOE_CHECK(chunk >= 1, kTag, "chunk = {} must be >= 1", chunk);
  const int64_t n = static_cast<int64_t>(tokens.size());
  MOE_CHECK(n <= cache_.capacity, kTag, "{} tokens do not fit the context of {}", n,
            cache_.capacity);
  Reset();
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    Run(tokens.data() + i, m, true, false, nullptr);
    on_chunk(i, m, st_.logits.view<const float>().data);
  }
}

double PerplexityResult::Perplexity() const {
  return predicted > 0 ? std::exp(nll / predicted) : 0.0;
}
double PerplexityResult::BitsPerToken() const {
  return predicted > 0 ? nll / predicted / std::log(2.0) : 0.0;
}

PerplexityResult StridedPerplexity(Generator& g, std::span<const int32_t> tokens, int64_t window,
                                   int64_t stride,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  MOE_CHECK(n >= 2, "perplexity", "the text has {} tokens; at least 2 are needed", n);
  MOE_CHECK(window >= 2, "perplexity", "window = {} must be >= 2", window);
  MOE_CHECK(stride >= 1 && stride <= window, "perplexity",
            "stride = {} must be in [1, window = {}]", stride, window);
  MOE_CHECK(window <= g.capacity(), "perplexity", "window = {} is longer than the context of {}",
            window, g.capacity());
  PerplexityResult r;
  const double t0 = kernels::NowSeconds();
  int64_t scored_to = 1;  // tokens [1, scored_to) are scored (token 0 has no prediction)
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    const int64_t from = std::max(scored_to, begin + 1);  // first target of this window
    g.Score(tokens.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin)), 512,
            [&](int64_t first, int64_t count, const float* logits) {
              const int64_t vocab = g.vocab_size();
              for (int64_t i = 0; i < count; ++i) {
                const int64_t target = begin + first + i + 1;  // the token row i predicts
                if (target < from || target >= end) continue;
                const float* row = logits + i * vocab;
                double mx = row[0];
                for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
                double sum = 0;
                for (int64_t v = 0; v < vocab; ++v)
                  sum += std::exp(static_cast<double>(row[v]) - mx);
                const int32_t t = tokens[static_cast<size_t>(target)];
                MOE_CHECK(t >= 0 && t < vocab, "perplexity",
                          "token {} = {} is outside the vocabulary", target, t);
                r.nll += mx + std::log(sum) - row[t];
                ++r.predicted;
              }
            });
    scored_to = end;
    ++r.windows;
    if (progress) progress(end, n);
    if (end == n) break;
  }
  r.seconds = kernels::NowSeconds() - t0;
  return r;
}

}  // namespace moe::generate
