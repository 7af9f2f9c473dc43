// The Mixture-of-Experts layer: y = sum_i G(x)_i E_i(x) (+ shared expert).
//   route (logits, scores, selection, gates, capacity) -> RoutingPlan
//   gather rows by expert -> grouped SwiGLU experts (+ shared expert) -> gate-weighted combine
// The residual is not part of the layer: the caller adds it.
#pragma once

#include <string_view>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/tensor.h"
#include "moe/mixture/config.h"
#include "moe/mixture/experts.h"
#include "moe/mixture/routing.h"

namespace moe::mixture {

// Weights of one layer (dtype F32 for use, F64 for gradient checks). Gradients use the same struct.
// The experts come in one of two layouts: the training layout (w13 / w2, and shared_w13 /
// shared_w2), which MoeForward and MoeBackward run in f32 or f64, or the inference layout
// (`experts` / `shared`: separate gate, up and down matrices per expert, F32 or block-quantised,
// possibly borrowed from a mapped GGUF file), which only the f32 MoeForward runs.
struct MoeWeights {
  Tensor router;       // [E, D]
  Tensor bias;         // [E]   selection bias (e_score_correction_bias); not trained by gradient
  Tensor w13;          // [E, 2F, D]: rows [0, F) gate W1, rows [F, 2F) up W3
  Tensor w2;           // [E, D, F]: down
  Tensor shared_w13;   // [2Fs, D] (shared expert, when shared_d_ff > 0)
  Tensor shared_w2;    // [D, Fs]
  Tensor shared_gate;  // [1, D]  (when shared_gate)
  std::vector<FfnMatrices> experts;  // inference layout: [E] (empty in the training layout)
  FfnMatrices shared;                // inference layout of the shared expert

  bool inference_layout() const { return !experts.empty(); }

  // Allocates zeroed tensors of the right shapes for cfg.
  void Allocate(const MoeConfig& cfg, DType dtype, bool storage = true);
  // N(0, std^2) for router and experts (std = 1/sqrt(fan_in) when std <= 0); bias zero.
  void InitRandom(const MoeConfig& cfg, DType dtype, Rng& rng, double std = 0.0);

  // Every defined tensor, bias included.
  template <typename Fn>
  void ForEachTensor(Fn&& fn) {
    Visit(fn, true);
  }
  // Tensors that receive gradients (all but the selection bias).
  template <typename Fn>
  void ForEachParameter(Fn&& fn) {
    Visit(fn, false);
  }

 private:
  template <typename Fn>
  void Visit(Fn& fn, bool with_bias) {
    fn(std::string_view("router"), router);
    if (with_bias && bias.defined()) fn(std::string_view("bias"), bias);
    if (!inference_layout()) {
      fn(std::string_view("w13"), w13);
      fn(std::string_view("w2"), w2);
    }
    if (shared_w13.defined()) fn(std::string_view("shared_w13"), shared_w13);
    if (shared_w2.defined()) fn(std::string_view("shared_w2"), shared_w2);
    if (shared_gate.defined()) fn(std::string_view("shared_gate"), shared_gate);
    auto matrices = [&](const std::string& p, FfnMatrices& m) {
      if (!m.defined()) return;
      fn(std::string_view(p + "gate"), m.gate);
      fn(std::string_view(p + "up"), m.up);
      fn(std::string_view(p + "down"), m.down);
    };
    for (size_t e = 0; e < experts.size(); ++e)
      matrices("experts." + std::to_string(e) + ".", experts[e]);
    matrices("shared.", shared);
  }
};

// Routing statistics of one forward call.
struct MoeStats {
  std::vector<int64_t> tokens_per_expert;    // [E] after capacity
  std::vector<int64_t> selected_per_expert;  // [E] before capacity
  int64_t assignments = 0;                   // kept (token, expert) pairs
  int64_t dropped = 0;                       // assignments over capacity
  double max_load = 0, mean_load = 0;        // of tokens_per_expert
  double imbalance = 0;                      // max_load / mean_load (1 = perfectly balanced)
  double entropy = 0;                        // mean router entropy (nats)
  double aux_loss = 0, z_loss = 0;
};

// Everything the forward saves for the backward (reused across calls to avoid reallocation).
template <typename T>
struct MoeState {
  RouterState<T> router;
  RoutingPlan<T> plan;
  Tensor xp;    // [N, D]  rows gathered by expert
  Tensor h;     // [N, 2F] expert pre-activations
  Tensor a;     // [N, F]  expert activations
  Tensor yp;    // [N, D]  expert outputs before the gate
  Tensor sh_h;  // [T, 2Fs]
  Tensor sh_a;  // [T, Fs]
  Tensor sh_y;  // [T, D]  shared expert output before its gate
  Tensor sg;    // [T]     shared gate sigmoid(x . w_sg)
  // Backward scratch (kept so repeated calls do not allocate and fault in fresh pages).
  Tensor dyp, dxp, da, dh;  // [N,D], [N,D], [N,F], [N,2F]
  Tensor dys, dxs, das, dhs;  // shared expert: [T,D], [T,D], [T,Fs], [T,2Fs]
  MoeStats stats;
  // Sum of the auxiliary losses to add to the objective.
  double aux_total() const { return stats.aux_loss + stats.z_loss; }
};

struct MoeForwardOptions {
  bool training = false;  // jitter
  uint64_t seed = 0;      // jitter noise stream
};

// y[T, D] = MoE(x[T, D]). Fills st (plan, saved activations, stats, losses).
template <typename T>
void MoeForward(const MoeConfig& cfg, const MoeWeights& w, CView<T> x, View<T> y, MoeState<T>& st,
                Context& ctx, const MoeForwardOptions& opts = {});

// Given dy = d(objective)/dy, accumulates d(objective)/dx into dx and every parameter gradient into
// grad (allocated like w; the caller zeroes). The objective includes the layer's aux and z losses
// with weight loss_scale (1 when the caller adds st.aux_total() to its loss unscaled).
template <typename T>
void MoeBackward(const MoeConfig& cfg, const MoeWeights& w, CView<T> x, CView<T> dy,
                 MoeState<T>& st, MoeWeights& grad, View<T> dx, Context& ctx,
                 double loss_scale = 1.0);

// DeepSeek-V3 aux-loss-free balancing, after a step: b_i += gamma * sign(mean load - load_i),
// load = selections before capacity. No gradient.
void UpdateSelectionBias(const MoeConfig& cfg, const std::vector<int64_t>& selected, Tensor& bias);

// Active FLOPs of one forward for given stats (2 * multiply-adds: router, routed and shared experts).
double MoeForwardFlops(const MoeConfig& cfg, int64_t tokens, int64_t assignments);

}  // namespace moe::mixture
