#include "tests/integration/fencing_checker.h"

#include "absl/strings/str_cat.h"

namespace lockd::integration {

void FencingChecker::Granted(const std::string& path, uint64_t holder,
                             uint64_t lock_generation) {
  absl::MutexLock lock(&mu_);
  ++grants_;
  PathState& state = paths_[path];
  if (state.holder != 0) {
    violations_.push_back(
        absl::StrCat("two exclusive holders of ", path, ": session ", holder,
                     " was granted generation ", lock_generation,
                     " while session ", state.holder, " still held it"));
  }
  if (lock_generation <= state.max_generation) {
    violations_.push_back(absl::StrCat(
        "lock generation of ", path, " went from ", state.max_generation,
        " to ", lock_generation, " (session ", holder, ")"));
  }
  state.holder = holder;
  if (lock_generation > state.max_generation) {
    state.max_generation = lock_generation;
  }
}

void FencingChecker::Releasing(const std::string& path, uint64_t holder) {
  absl::MutexLock lock(&mu_);
  PathState& state = paths_[path];
  if (state.holder != holder) {
    violations_.push_back(absl::StrCat("session ", holder, " releases ", path,
                                       " but the checker has session ",
                                       state.holder, " as its holder"));
    return;
  }
  state.holder = 0;
}

std::vector<std::string> FencingChecker::violations() const {
  absl::MutexLock lock(&mu_);
  return violations_;
}

uint64_t FencingChecker::grants() const {
  absl::MutexLock lock(&mu_);
  return grants_;
}

uint64_t FencingChecker::max_generation(const std::string& path) const {
  absl::MutexLock lock(&mu_);
  auto it = paths_.find(path);
  return it == paths_.end() ? 0 : it->second.max_generation;
}

}  // namespace lockd::integration
