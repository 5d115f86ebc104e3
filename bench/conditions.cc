#include "bench/conditions.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace lockd::bench {

std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      return std::string(
          absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
    }
  }
  return "unknown";
}

double MeasureFsyncMs(const std::string& dir) {
  const std::string path = dir + "/fsync-probe";
  FILE* file = fopen(path.c_str(), "w");
  if (file == nullptr) return -1;
  std::vector<double> samples;
  const std::string block(4096, 'x');
  for (int i = 0; i < 50; ++i) {
    const absl::Time start = absl::Now();
    fwrite(block.data(), 1, block.size(), file);
    fflush(file);
    fdatasync(fileno(file));
    samples.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  fclose(file);
  unlink(path.c_str());
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t index =
      std::min(sorted.size() - 1,
               static_cast<size_t>(p * static_cast<double>(sorted.size())));
  return sorted[index];
}

}  // namespace lockd::bench
