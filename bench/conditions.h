// The conditions a benchmark prints beside its figures: the processor and
// the latency floor of one durable write on the disk under test.

#ifndef LOCKD_BENCH_CONDITIONS_H_
#define LOCKD_BENCH_CONDITIONS_H_

#include <string>
#include <vector>

namespace lockd::bench {

// The "model name" of /proc/cpuinfo, or "unknown".
std::string CpuModel();

// Median latency in ms of write + fdatasync of 4 KiB in `dir` (50 samples):
// the floor of one durable write of a replica. -1 if `dir` is not writable.
double MeasureFsyncMs(const std::string& dir);

// The p-quantile (0 <= p <= 1) of ascending `sorted`; 0 when empty.
double Percentile(const std::vector<double>& sorted, double p);

}  // namespace lockd::bench

#endif  // LOCKD_BENCH_CONDITIONS_H_
