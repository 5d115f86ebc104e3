#ifndef LOCKD_PAXOS_RANDOM_H_
#define LOCKD_PAXOS_RANDOM_H_

#include <cstdint>

namespace lockd::paxos {

// A small deterministic pseudo-random generator (SplitMix64). Injected with
// an explicit seed so that simulations replay exactly; not for cryptography.
// Not thread-safe.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n). REQUIRES: n > 0.
  uint64_t Uniform(uint64_t n) { return Next() % n; }

  // Uniform in [lo, hi]. REQUIRES: lo <= hi.
  int64_t Range(int64_t lo, int64_t hi) {
    return lo +
           static_cast<int64_t>(Uniform(static_cast<uint64_t>(hi - lo) + 1));
  }

  // True with probability p.
  bool Bernoulli(double p) {
    return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p;
  }

 private:
  uint64_t state_;
};

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_RANDOM_H_
