// Philox4x32-10: a counter-based random generator (Salmon et al., SC'11).
//
// The same function runs on host and device, so the CPU and CUDA backends draw identical
// numbers. Dropout keys a draw by (seed, layer), and counts it by (step, global sample
// index, element): a split of the batch into micro-batches never changes a mask.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MB_HOST_DEVICE __host__ __device__
#else
#define MB_HOST_DEVICE
#endif

namespace mb {

struct PhiloxKey {
  std::uint32_t k0, k1;
};
struct PhiloxCounter {
  std::uint32_t c0, c1, c2, c3;
};
struct PhiloxOutput {
  std::uint32_t v[4];
};

MB_HOST_DEVICE inline void philox_mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi,
                                          std::uint32_t& lo) {
  const std::uint64_t product = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(product >> 32);
  lo = static_cast<std::uint32_t>(product);
}

MB_HOST_DEVICE inline PhiloxOutput philox4x32_10(PhiloxCounter counter, PhiloxKey key) {
  constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  std::uint32_t c0 = counter.c0, c1 = counter.c1, c2 = counter.c2, c3 = counter.c3;
  std::uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kMul0, c0, hi0, lo0);
    philox_mulhilo(kMul1, c2, hi1, lo1);
    const std::uint32_t n0 = hi1 ^ c1 ^ k0;
    const std::uint32_t n1 = lo1;
    const std::uint32_t n2 = hi0 ^ c3 ^ k1;
    const std::uint32_t n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return PhiloxOutput{{c0, c1, c2, c3}};
}

// A uniform float in [0, 1) from 24 random bits.
MB_HOST_DEVICE inline float philox_uniform(std::uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
}

// The key of a stream of draws: the seed's low word mixed with the stream's id, its high word.
MB_HOST_DEVICE inline PhiloxKey philox_key(std::uint64_t seed, std::uint32_t stream_id) {
  return PhiloxKey{static_cast<std::uint32_t>(seed) ^ (stream_id * 0x9E3779B9u),
                   static_cast<std::uint32_t>(seed >> 32)};
}

// The uniform draw for one element: key (seed, stream_id), counter (step, sample,
// element / 4); the element picks one of the four outputs.
MB_HOST_DEVICE inline float philox_element_uniform(std::uint64_t seed, std::uint32_t stream_id,
                                                   std::uint32_t step, std::uint32_t sample,
                                                   std::uint32_t element) {
  const PhiloxKey key = philox_key(seed, stream_id);
  const PhiloxCounter counter{element >> 2, sample, step, 0x6D62u};
  return philox_uniform(philox4x32_10(counter, key).v[element & 3u]);
}

}  // namespace mb
