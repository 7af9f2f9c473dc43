// AVX-512 + AVX512-VNNI quantised dot products: vpdpbusd (u8 x s8 -> s32) and vpdpwssd. Compiled
// with -mavx512vnni; called only when the CPU reports AVX512-VNNI. See quant_avx512_inl.h.
#include "moe/kernels/isa/quant_avx512_inl.h"

namespace moe::kernels {

const QuantOps& Avx512VnniQuantOps() {
  static const QuantOps ops = MakeAvx512QuantOps<true>("avx512vnni");
  return ops;
}

}  // namespace moe::kernels
