// cell_sim: deterministic simulation of a whole lockd cell with clients.
//
//   cell_sim --seeds=20 --steps=20000 --replicas=3 --clients=6
//   cell_sim --bug=client_ignores_lease --seeds=10
//
// Runs one seeded world per seed (see tests/sim/cell_simulator.h), prints
// totals and, for every failing seed, the command that reproduces it. The
// last line is "seeds=N steps=TOTAL violations=V"; the exit code is 1 if
// V > 0.

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "tests/sim/cell_simulator.h"

ABSL_FLAG(int, seeds, 20, "Number of seeds (worlds) to run.");
ABSL_FLAG(uint64_t, first_seed, 1, "First seed; seeds run consecutively.");
ABSL_FLAG(int, steps, 20000, "Events per seed before the healing phase.");
ABSL_FLAG(int, replicas, 3, "Replicas per cell (1 to 9).");
ABSL_FLAG(int, clients, 6, "Simulated clients (1 to 32).");
ABSL_FLAG(std::string, bug, "none",
          "Enable a deliberately wrong client or checker input: none, "
          "client_ignores_lease, view_double_grant, "
          "view_generation_rollback.");
ABSL_FLAG(bool, membership, true,
          "Let seeds change the membership among their faults.");
ABSL_FLAG(bool, verbose, false, "Print every violation and per-seed totals.");
ABSL_FLAG(bool, trace, false,
          "Print leaders, faults and client actions as they happen.");

namespace {

unsigned long long U(uint64_t value) {
  return static_cast<unsigned long long>(value);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Deterministic simulation of a lockd cell (replicas, state machine, "
      "clients) under faults.\n"
      "Usage: cell_sim --seeds=N [--first_seed=S] [--steps=M] [--replicas=R] "
      "[--clients=C] [--bug=NAME]");
  absl::ParseCommandLine(argc, argv);
  // Replica logs (leadership changes) would drown the report.
  FLAGS_minloglevel = 3;
  google::InitGoogleLogging(argv[0]);

  const int seeds = absl::GetFlag(FLAGS_seeds);
  const uint64_t first_seed = absl::GetFlag(FLAGS_first_seed);
  const int steps = absl::GetFlag(FLAGS_steps);
  const int replicas = absl::GetFlag(FLAGS_replicas);
  const int clients = absl::GetFlag(FLAGS_clients);
  const bool verbose = absl::GetFlag(FLAGS_verbose);
  const absl::StatusOr<lockd::sim::Bug> bug =
      lockd::sim::ParseBug(absl::GetFlag(FLAGS_bug));
  if (!bug.ok()) {
    std::fprintf(stderr, "cell_sim: %s\n",
                 std::string(bug.status().message()).c_str());
    return 2;
  }
  if (seeds < 1 || steps < 1 || replicas < 1 || replicas > 9 || clients < 1 ||
      clients > 32) {
    std::fprintf(stderr,
                 "cell_sim: need --seeds >= 1, --steps >= 1, --replicas in "
                 "[1, 9] and --clients in [1, 32]\n");
    return 2;
  }

  const absl::Time start = absl::Now();
  lockd::sim::Result totals;
  uint64_t failing_seeds = 0;
  for (int i = 0; i < seeds; ++i) {
    lockd::sim::Options options;
    options.seed = first_seed + static_cast<uint64_t>(i);
    options.replicas = replicas;
    options.clients = clients;
    options.steps = steps;
    options.bug = *bug;
    options.membership = absl::GetFlag(FLAGS_membership);
    options.trace = absl::GetFlag(FLAGS_trace);
    const lockd::sim::Result result = lockd::sim::Run(options);
    totals.steps += result.steps;
    totals.virtual_ms += result.virtual_ms;
    totals.violations += result.violations;
    totals.exclusive_grants += result.exclusive_grants;
    totals.shared_grants += result.shared_grants;
    totals.releases += result.releases;
    totals.forgeries_refused += result.forgeries_refused;
    totals.acl_setups += result.acl_setups;
    totals.sessions_created += result.sessions_created;
    totals.sessions_expired += result.sessions_expired;
    totals.retries += result.retries;
    totals.keepalives_answered += result.keepalives_answered;
    totals.leader_changes += result.leader_changes;
    totals.snapshots_installed += result.snapshots_installed;
    totals.max_expiry_overshoot_ms = std::max(totals.max_expiry_overshoot_ms,
                                              result.max_expiry_overshoot_ms);
    totals.heal_ms = std::max(totals.heal_ms, result.heal_ms);
    for (const auto& [kind, count] : result.faults) {
      totals.faults[kind] += count;
    }
    if (verbose) {
      std::printf(
          "seed=%llu steps=%llu virtual=%.1fs grants=%llu expired=%llu "
          "leaders=%llu heal_ms=%lld violations=%llu\n",
          U(options.seed), U(result.steps),
          static_cast<double>(result.virtual_ms) / 1000.0,
          U(result.exclusive_grants + result.shared_grants),
          U(result.sessions_expired), U(result.leader_changes),
          static_cast<long long>(result.heal_ms), U(result.violations));
    }
    if (result.violations > 0) {
      ++failing_seeds;
      const size_t shown = verbose ? result.violation_messages.size() : 1;
      for (size_t v = 0; v < shown && v < result.violation_messages.size();
           ++v) {
        std::printf("seed %llu violation: %s\n", U(options.seed),
                    result.violation_messages[v].c_str());
      }
      std::printf(
          "reproduce: cell_sim --seeds=1 --first_seed=%llu --steps=%d "
          "--replicas=%d --clients=%d --bug=%s --verbose\n",
          U(options.seed), steps, replicas, clients,
          lockd::sim::BugName(*bug).c_str());
    }
    std::fflush(stdout);
  }
  std::vector<std::string> fault_parts;
  for (const auto& [kind, count] : totals.faults) {
    fault_parts.push_back(absl::StrCat(kind, "=", count));
  }
  std::printf("replicas=%d clients=%d bug=%s elapsed=%.1fs virtual=%.0fs\n",
              replicas, clients, lockd::sim::BugName(*bug).c_str(),
              absl::ToDoubleSeconds(absl::Now() - start),
              static_cast<double>(totals.virtual_ms) / 1000.0);
  std::printf("faults: %s\n", absl::StrJoin(fault_parts, " ").c_str());
  std::printf(
      "exclusive_grants=%llu shared_grants=%llu releases=%llu "
      "forgeries_refused=%llu acl_setups=%llu "
      "sessions_created=%llu sessions_expired=%llu retries=%llu "
      "keepalives_answered=%llu leader_changes=%llu snapshots_installed=%llu "
      "max_expiry_overshoot_ms=%lld max_heal_ms=%lld failing_seeds=%llu\n",
      U(totals.exclusive_grants), U(totals.shared_grants), U(totals.releases),
      U(totals.forgeries_refused), U(totals.acl_setups),
      U(totals.sessions_created), U(totals.sessions_expired), U(totals.retries),
      U(totals.keepalives_answered), U(totals.leader_changes),
      U(totals.snapshots_installed),
      static_cast<long long>(totals.max_expiry_overshoot_ms),
      static_cast<long long>(totals.heal_ms), U(failing_seeds));
  std::printf("seeds=%d steps=%llu violations=%llu\n", seeds, U(totals.steps),
              U(totals.violations));
  return totals.violations > 0 ? 1 : 0;
}
