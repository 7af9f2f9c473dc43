// AVX-512 (F/BW/VL/DQ) quantised dot products: maddubs + madd. Compiled with -mavx512*; called only
// when ActiveIsa() allows AVX-512. See quant_avx512_inl.h.
#include "moe/kernels/isa/quant_avx512_inl.h"

namespace moe::kernels {

const QuantOps& Avx512QuantOps() {
  static const QuantOps ops = MakeAvx512QuantOps<false>("avx512");
  return ops;
}

}  // namespace moe::kernels
