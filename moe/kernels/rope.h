// Rotary position embeddings (RoPE).
//
// A pair (a, b) of one head's dims at position p and frequency i is rotated by the angle
// p * inv_freq[i] and scaled by the table's cos/sin scale m (1 except for YaRN):
//   a' = m (a cos - b sin),   b' = m (b cos + a sin)
// Which dims pair up is the pairing convention:
//   kHalf        Hugging Face rotate_half (Llama, Mixtral, Qwen, OLMoE): (i, i + r/2), i < r/2
//   kInterleaved GPT-J / Meta / GGUF, and DeepSeek's q_pe/k_pe: (2i, 2i + 1)
// Only the r = rotary_dim dims [offset, offset + r) of each head are rotated (partial rotary:
// offset 0 and r < Dh; DeepSeek MLA: offset = qk_nope_head_dim); the other dims pass through.
//
// inv_freq[i] = theta^(-2i/r), i < r/2, then by scaling kind:
//   linear  inv_freq / factor
//   yarn    DeepSeek-V2/V3's YaRN: with d(n) = r ln(L / (2 pi n)) / (2 ln theta), L =
//           original_max_position_embeddings, low = max(floor(d(beta_fast)), 0) and high =
//           min(ceil(d(beta_slow)), r - 1) (high += 0.001 when equal), ramp(i) = clamp((i - low) /
//           (high - low), 0, 1):  inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp);
//           cos/sin scale m = mscale(factor, mscale) / mscale(factor, mscale_all_dim), with
//           mscale(s, k) = 0.1 k ln(s) + 1 for s > 1 and 1 otherwise; DeepSeek also multiplies its
//           softmax scale by mscale(factor, mscale_all_dim)^2 (SoftmaxScaleMultiplier()).
//   llama3  wavelength w = 2 pi / inv_freq, L = original_max_position_embeddings:
//           w < L / high_freq_factor: unchanged;  w > L / low_freq_factor: inv_freq / factor;
//           otherwise s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor) and
//           inv_freq = (1 - s) inv_freq / factor + s inv_freq.
//   freq_factors  inv_freq[i] / freq_factors[i] with r/2 explicit factors (GGUF's rope_freqs
//           tensor, which is how llama.cpp files carry Llama 3 scaling).
// The same angles are used everywhere: cos/sin are evaluated in double from pos * inv_freq[i]
// (never accumulated), so a cached row and one computed on demand are bitwise equal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

enum class RopeScalingKind { kNone, kLinear, kYarn, kLlama3, kFreqFactors };
enum class RopePairing { kHalf, kInterleaved };

// "none" / "default", "linear", "yarn", "llama3" (the rope_scaling "type" / "rope_type" of a
// Hugging Face config) and moe's "freq_factors"; anything else is an Error.
RopeScalingKind ParseRopeScalingKind(std::string_view name);
std::string_view RopeScalingKindName(RopeScalingKind kind);

struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::kNone;
  double factor = 1.0;                           // linear, yarn, llama3
  int64_t original_max_position_embeddings = 0;  // yarn, llama3
  double beta_fast = 32.0;                       // yarn
  double beta_slow = 1.0;                        // yarn
  double mscale = 1.0;                           // yarn
  double mscale_all_dim = 0.0;                   // yarn
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  std::vector<double> freq_factors{};            // freq_factors: r/2 values, finite and > 0
};

// The per-frequency divisors that turn unscaled inv_freq into `s`'s (what GGUF's rope_freqs holds):
// inv_freq_unscaled[i] / inv_freq_scaled[i]. For none, linear, llama3 and freq_factors scaling;
// yarn (which also scales cos/sin) is an Error.
std::vector<double> RopeFreqFactors(int64_t rotary_dim, double theta, const RopeScaling& s);

struct RopeConfig {
  int64_t rotary_dim = 0;  // r: even, > 0
  double theta = 10000.0;  // base, > 1
  RopeScaling scaling;
  // Positions [0, cached_positions) are precomputed; any other position is computed on demand
  // (same values, a little slower). 0 caches nothing.
  int64_t cached_positions = 0;
};

// YaRN's magnitude correction: 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1.
double YarnMscale(double scale, double mscale);

// Immutable after construction, so one table is shared by every layer and thread.
class RopeTable {
 public:
  // Validates the config (Error naming the field) and precomputes the cached positions.
  explicit RopeTable(const RopeConfig& config);

  const RopeConfig& config() const { return config_; }
  int64_t rotary_dim() const { return config_.rotary_dim; }
  int64_t n_freqs() const { return config_.rotary_dim / 2; }
  // [r/2] after scaling.
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  // m: the factor cos and sin are multiplied by (YaRN's mscale ratio; 1 otherwise).
  double cos_sin_scale() const { return cos_sin_scale_; }
  // The factor to multiply the attention softmax scale by: mscale(factor, mscale_all_dim)^2 for
  // YaRN (DeepSeek-V2/V3), 1 otherwise.
  double SoftmaxScaleMultiplier() const;

  // m cos(pos * inv_freq[i]) and m sin(...) for i < r/2; pos >= 0.
  void CosSin(int64_t pos, double* cos, double* sin) const;

 private:
  void Compute(int64_t pos, double* cos, double* sin) const;

  RopeConfig config_;
  std::vector<double> inv_freq_;
  double cos_sin_scale_ = 1.0;
  std::vector<double> cos_, sin_;  // [cached_positions, r/2]
};

// y[t, h, :] = x[t, h, :] with dims [offset, offset + r) of every head rotated for position
// positions[t]. x, y [T, H, Dh] with offset + r <= Dh; positions [T], each >= 0 (a batch of
// sequences is T = B * L rows with their own positions). y may be x itself (in place);
// dx in the backward must not overlap dy.
template <typename T>
void RopeForward(CView<T> x /*[T,H,Dh]*/, CView<int32_t> positions /*[T]*/, const RopeTable& table,
                 RopePairing pairing, int64_t offset, View<T> y /*[T,H,Dh]*/, Context& ctx);

// dx += R(positions)^T dy: R is m times a rotation, so this is m times the inverse rotation of the
// gradient; dims outside the rotated slice get dx += dy.
template <typename T>
void RopeBackward(CView<T> dy /*[T,H,Dh]*/, CView<int32_t> positions /*[T]*/,
                  const RopeTable& table, RopePairing pairing, int64_t offset,
                  View<T> dx /*[T,H,Dh]*/, Context& ctx);

}  // namespace moe::kernels
