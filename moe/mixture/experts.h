// Grouped SwiGLU FFNs: E_g(x) = W2_g (silu(W1_g x) * W3_g x) for several groups of rows at once
// (the routed experts over their permuted rows, plus the shared expert over all tokens). Work is
// cut into (group, column-block) tasks and split over the pool by cost, so an expert with no rows
// costs nothing and small experts still keep every core busy. Gate and up projections come from one
// fused weight w13 = [W1; W3] ([2F, D]); the SwiGLU runs on each block while it is in cache.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/core/context.h"
#include "moe/core/tensor.h"

namespace moe::mixture {

template <typename T>
struct FfnGroup {
  int64_t rows = 0;        // m
  int64_t d_ff = 0;        // F of this group
  const T* x = nullptr;    // [m, D]
  const T* w13 = nullptr;  // [2F, D]
  const T* w2 = nullptr;   // [D, F]
  T* h = nullptr;          // [m, 2F] saved pre-activation (gate | up)
  T* a = nullptr;          // [m, F]  saved activation
  T* y = nullptr;          // [m, D]  output (written)
};

template <typename T>
struct FfnGroupGrad {
  const T* dy = nullptr;   // [m, D]
  T* dx = nullptr;         // [m, D]  written
  T* da = nullptr;         // [m, F]  scratch
  T* dh = nullptr;         // [m, 2F] scratch
  T* dw13 = nullptr;       // [2F, D] accumulated
  T* dw2 = nullptr;        // [D, F]  accumulated
};

template <typename T>
void GroupedSwiGluForward(const std::vector<FfnGroup<T>>& groups, int64_t d_model, Context& ctx);

template <typename T>
void GroupedSwiGluBackward(const std::vector<FfnGroup<T>>& groups,
                           const std::vector<FfnGroupGrad<T>>& grads, int64_t d_model,
                           Context& ctx);

// One SwiGLU FFN's matrices as inference stores them: gate W1 [F, D], up W3 [F, D], down W2 [D, F],
// each F32 or block-quantised (moe/kernels/weight_matmul.h), owned or borrowed from a mapped file
// (GGUF keeps gate and up apart, and a quantised expert cannot be fused into w13 without a copy).
struct FfnMatrices {
  Tensor gate, up, down;
  bool defined() const { return gate.defined(); }
  int64_t d_ff() const { return gate.defined() ? gate.shape()[0] : 0; }
};

// Inference over FfnMatrices: y = W2 (silu(W1 x) * W3 x) for every group in three passes: the gate
// and up products of all groups (one parallel region when the groups have few rows, as in decode),
// the SwiGLU, then all down products.
struct FfnInferGroup {
  int64_t rows = 0;                   // m
  const float* x = nullptr;           // [m, D]
  const FfnMatrices* w = nullptr;
  float* h = nullptr;                 // [2, m, F] scratch: gate outputs, then up outputs
  float* a = nullptr;                 // [m, F] scratch
  float* y = nullptr;                 // [m, D] written
};
void SwiGluInfer(const std::vector<FfnInferGroup>& groups, Context& ctx);

// Runs fn(task) for tasks 0..costs.size()-1, giving each worker one contiguous run of tasks with
// about the same total cost (static and deterministic for a given thread count).
template <typename Fn>
void RunBalanced(const std::vector<double>& costs, Context& ctx, Fn&& fn);

}  // namespace moe::mixture

#include "moe/mixture/experts_inl.h"
