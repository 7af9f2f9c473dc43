// Text generation with a KV cache: batched prefill of the prompt, then one token per step through
// the sampler, streaming decoded text, stop strings and end-of-sequence ids, timing, and an
// optional routing trace (per processed token and MoE layer: the chosen experts and their gates).
//
// A Generator keeps its cache and the tokens in it between calls: a new prompt that starts with
// the cached tokens (a chat's next turn) only runs the tokens after the common prefix.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/context.h"
#include "moe/generate/sampler.h"
#include "moe/model/transformer.h"
#include "moe/model/weights.h"
#include "moe/tokenizer/tokenizer.h"

namespace moe::generate {

struct GenerateOptions {
  SamplerOptions sampler;
  int64_t max_tokens = 256;       // new tokens at most
  std::vector<std::string> stop;  // stop strings: output ends before the first one found
  std::vector<int32_t> stop_ids;  // end-of-sequence ids (not part of the output)
  int64_t prefill_chunk = 512;    // prompt tokens per forward call (bounds the activations)

  void Validate() const;  // Error naming the option
};

enum class FinishReason { kLength, kStopId, kStopString, kContext };
std::string_view FinishReasonName(FinishReason r);  // "length", "eos", "stop", "context"

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (stop id excluded)
  std::string text;             // decoded output (cut before a stop string)
  FinishReason finish = FinishReason::kLength;
  int64_t prompt_tokens = 0;   // tokens of the prompt
  int64_t prefill_tokens = 0;  // of those, run this call (the rest came from the cache)
  double prefill_s = 0;
  int64_t decode_tokens = 0;  // forward steps of one token each
  double decode_s = 0;
  double PrefillTokensPerSecond() const { return prefill_s > 0 ? prefill_tokens / prefill_s : 0; }
  double DecodeTokensPerSecond() const { return decode_s > 0 ? decode_tokens / decode_s : 0; }
};

// JSON lines, one per processed token and MoE layer:
//   {"phase":"prompt"|"generated","pos":P,"token":ID,"text":"...","layer":L,
//    "experts":[e1,...],"gates":[g1,...]}
// experts in the router's order of preference (for token choice), gates as applied (route scale
// included). The lines of each (forward call, layer) go to `sink` in one piece (e.g.
// io::AtomicFileWriter::Append).
class RoutingTrace {
 public:
  using Sink = std::function<void(std::string_view)>;
  explicit RoutingTrace(Sink sink, const tokenizer::Tokenizer* tok = nullptr)
      : sink_(std::move(sink)), tok_(tok) {}
  // Records one forward call: tokens[0..n) at positions pos0.., phase name; the plans arrive
  // through Hook() while the call runs.
  void Begin(const int32_t* tokens, int64_t n, int64_t pos0, bool generated);
  std::function<void(int64_t, const mixture::RoutingPlan<float>&)> Hook();
  int64_t lines() const { return lines_; }

 private:
  void OnPlan(int64_t layer, const mixture::RoutingPlan<float>& plan);
  Sink sink_;
  const tokenizer::Tokenizer* tok_;
  std::vector<int32_t> tokens_;
  int64_t pos0_ = 0;
  bool generated_ = false;
  int64_t lines_ = 0;
  std::string line_;
};

class Generator {
 public:
  // The model, weights and tokenizer must outlive the generator. `context` caps the cache (0 = the
  // model's max_seq).
  Generator(const model::Transformer& tf, const model::ModelWeights& w,
            const tokenizer::Tokenizer& tok, Context& ctx, int64_t context = 0);

  // Continues `prompt` (ids; the caller adds BOS/templates). on_text receives the decoded output
  // piece by piece as it becomes final (never text past a stop string). The cache keeps prompt +
  // output for the next call.
  GenerateResult Generate(std::span<const int32_t> prompt, const GenerateOptions& opt,
                          const std::function<void(std::string_view)>& on_text = {},
                          RoutingTrace* trace = nullptr);

  // Logits [n, V] of every position of `tokens`, run from an empty cache in chunks (perplexity).
  // Calls on_chunk(first, count, logits) per chunk; logits is row-major [count, V].
  void Score(std::span<const int32_t> tokens, int64_t chunk,
             const std::function<void(int64_t, int64_t, const float*)>& on_chunk);

  void Reset();  // forget the cache
  int64_t cached() const { return cache_.length; }
  int64_t capacity() const { return cache_.capacity; }
  int64_t vocab_size() const { return tf_.config().vocab_size; }
  const std::vector<int32_t>& history() const { return history_; }

 private:
  void Run(const int32_t* tokens, int64_t n, bool all_logits, bool generated, RoutingTrace* trace);
  const model::Transformer& tf_;
  const model::ModelWeights& w_;
  const tokenizer::Tokenizer& tok_;
  Context& ctx_;
  model::KvCache cache_;
  model::InferState st_;
  std::vector<int32_t> history_;  // tokens in the cache
};

// Strided perplexity (the standard sliding-window evaluation): windows of `window` tokens start
// every `stride` tokens; each window runs from an empty cache and scores only the tokens that no
// earlier window scored, so every token after the first is predicted once, with up to
// window - stride tokens of context carried over. stride == window: disjoint windows.
struct PerplexityResult {
  double nll = 0;         // summed negative log-likelihood (nats)
  int64_t predicted = 0;  // tokens scored
  int64_t windows = 0;
  double seconds = 0;
  double Perplexity() const;
  double BitsPerToken() const;
};
PerplexityResult StridedPerplexity(
    Generator& g, std::span<const int32_t> tokens, int64_t window, int64_t stride,
    const std::function<void(int64_t done, int64_t total)>& progress = {});

}  // namespace moe::generate
