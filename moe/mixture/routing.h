// Routers turn router logits into one plain RoutingPlan: assignments grouped by expert, so experts
// run as grouped matmuls over permuted rows and outputs are scattered back weighted by gate.
//   token choice: N <= T*K (over-capacity assignments are dropped);
//   expert choice: N = E*C, and a token may get 0..E experts.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/tensor.h"
#include "moe/mixture/config.h"

namespace moe::mixture {

template <typename T>
struct RoutingPlan {
  int64_t num_tokens = 0;                // T
  int64_t num_experts = 0;               // E
  std::vector<int32_t> token;            // [N] token of each assignment; by expert, then token
  std::vector<int32_t> expert;           // [N] expert of each assignment (redundant with offsets)
  std::vector<T> gate;                   // [N] combine weight (route_scale included)
  std::vector<int64_t> expert_offsets;   // [E+1] assignments of expert e: [off[e], off[e+1])
  std::vector<int64_t> token_offsets;    // [T+1] CSR over the assignments of each token ...
  std::vector<int32_t> token_assign;     // [N]   ... positions into the arrays above, by expert
  std::vector<int64_t> selected;         // [E] selections before capacity dropping
  int64_t dropped = 0;                   // assignments removed by the capacity limit

  int64_t size() const { return static_cast<int64_t>(token.size()); }
  int64_t count(int64_t e) const { return expert_offsets[e + 1] - expert_offsets[e]; }
};

// What the router saves for its backward.
template <typename T>
struct RouterState {
  Tensor noise;     // [T,D] multiplicative jitter (training with jitter > 0), else undefined
  Tensor x_router;  // [T,D] x * noise (only when jittered)
  Tensor logits;    // [T,E]
  Tensor scores;    // [T,E] softmax or sigmoid of logits
  Tensor lse;       // [T] logsumexp of each logits row (z-loss)
  std::vector<int32_t> choice;      // [T,K] token choice: chosen experts by rank (before dropping)
  std::vector<int32_t> choice_pos;  // [T,K] plan position of each choice, -1 when dropped
  int64_t capacity = 0;             // C (0 = unlimited)
  double aux_loss = 0;              // alpha * E * sum_i f_i P_i
  double z_loss = 0;                // beta * mean_t lse_t^2
  double entropy = 0;               // mean router entropy (nats) of the score distribution
};

struct RouteOptions {
  bool training = false;  // enables jitter
  uint64_t seed = 0;      // jitter noise stream
};

// Capacity per expert for T tokens (see MoeConfig::capacity_factor); 0 = unlimited.
int64_t ExpertCapacity(const MoeConfig& cfg, int64_t num_tokens);

// logits = x * w_router^T; scores; selection (with bias and groups); gates; capacity; plan; losses.
template <typename T>
void RouteForward(const MoeConfig& cfg, CView<T> x /*[T,D]*/, CView<T> w_router /*[E,D]*/,
                  CView<T> bias /*[E] or empty*/, const RouteOptions& opts, RouterState<T>& st,
                  RoutingPlan<T>& plan, Context& ctx);

// Given dgate[n] = d(objective)/d(plan.gate[n]), accumulates the router's gradients into dx and
// dw_router, including the load-balancing and z-losses scaled by loss_scale.
template <typename T>
void RouteBackward(const MoeConfig& cfg, CView<T> x, CView<T> w_router, const RouterState<T>& st,
                   const RoutingPlan<T>& plan, const std::vector<T>& dgate, T loss_scale,
                   View<T> dx /*[T,D]*/, View<T> dw_router /*[E,D]*/, Context& ctx);

}  // namespace moe::mixture
