// paxos_sim: deterministic simulation of a Multi-Paxos cell.
//
//   paxos_sim --seeds=300 --steps=5000 --replicas=3
//   paxos_sim --bug=ack_before_sync --seeds=50
//
// Runs one seeded world per seed (see tests/paxos/simulator.h), prints totals
// and, for every failing seed, the command that reproduces it. The last line
// is "seeds=N steps=TOTAL violations=V"; the exit code is 1 if V > 0.

#include <cstdio>
#include <map>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "tests/paxos/simulator.h"

ABSL_FLAG(int, seeds, 100, "Number of seeds (worlds) to run.");
ABSL_FLAG(uint64_t, first_seed, 1, "First seed; seeds run consecutively.");
ABSL_FLAG(int, steps, 5000, "Events per seed before the healing phase.");
ABSL_FLAG(int, replicas, 3, "Replicas per cell (1 to 9).");
ABSL_FLAG(std::string, bug, "none",
          "Enable a deliberately unsafe variant: none, accept_ignores_ballot, "
          "leader_ignores_promised_values, ack_before_sync, "
          "learner_ignores_ballot, lease_from_ack_receipt, "
          "acceptor_ignores_leader_lease, lease_before_takeover.");
ABSL_FLAG(bool, membership, true,
          "Let seeds change the membership among their faults (add, "
          "promote, remove, replace members; hand leadership over).");
ABSL_FLAG(bool, verbose, false, "Print every violation and per-seed totals.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Deterministic simulation of a lockd Multi-Paxos cell under faults.\n"
      "Usage: paxos_sim --seeds=N [--first_seed=S] [--steps=M] "
      "[--replicas=R] [--bug=NAME]");
  absl::ParseCommandLine(argc, argv);
  // Replica logs (leadership changes; in bug runs, refused acceptances)
  // would drown the report.
  FLAGS_minloglevel = 3;
  google::InitGoogleLogging(argv[0]);

  const int seeds = absl::GetFlag(FLAGS_seeds);
  const uint64_t first_seed = absl::GetFlag(FLAGS_first_seed);
  const int steps = absl::GetFlag(FLAGS_steps);
  const int replicas = absl::GetFlag(FLAGS_replicas);
  const absl::StatusOr<lockd::paxos::sim::Bug> bug =
      lockd::paxos::sim::ParseBug(absl::GetFlag(FLAGS_bug));
  if (!bug.ok()) {
    std::fprintf(stderr, "paxos_sim: %s\n", bug.status().message().data());
    return 2;
  }
  if (seeds < 1 || steps < 1 || replicas < 1 || replicas > 9) {
    std::fprintf(stderr,
                 "paxos_sim: need --seeds >= 1, --steps >= 1 and --replicas "
                 "in [1, 9]\n");
    return 2;
  }

  const absl::Time start = absl::Now();
  uint64_t total_steps = 0;
  uint64_t violations = 0;
  uint64_t failing_seeds = 0;
  uint64_t chosen = 0, proposals = 0, acknowledged = 0, leader_changes = 0,
           snapshots = 0, max_heal_ticks = 0, membership_changes = 0;
  std::map<std::string, uint64_t> faults;
  for (int i = 0; i < seeds; ++i) {
    lockd::paxos::sim::Options options;
    options.seed = first_seed + static_cast<uint64_t>(i);
    options.replicas = replicas;
    options.steps = steps;
    options.bug = *bug;
    options.membership = absl::GetFlag(FLAGS_membership);
    const lockd::paxos::sim::Result result = lockd::paxos::sim::Run(options);
    total_steps += result.steps;
    violations += result.violations;
    chosen += result.chosen_slots;
    proposals += result.proposals;
    acknowledged += result.acknowledged;
    leader_changes += result.leader_changes;
    snapshots += result.snapshots_installed;
    membership_changes += result.membership_changes;
    max_heal_ticks = std::max(max_heal_ticks, result.heal_ticks);
    for (const auto& [kind, count] : result.faults) faults[kind] += count;
    if (absl::GetFlag(FLAGS_verbose)) {
      std::printf(
          "seed=%llu steps=%llu chosen=%llu leaders=%llu heal_ticks=%llu "
          "violations=%llu\n",
          static_cast<unsigned long long>(options.seed),
          static_cast<unsigned long long>(result.steps),
          static_cast<unsigned long long>(result.chosen_slots),
          static_cast<unsigned long long>(result.leader_changes),
          static_cast<unsigned long long>(result.heal_ticks),
          static_cast<unsigned long long>(result.violations));
    }
    if (result.violations > 0) {
      ++failing_seeds;
      const size_t shown =
          absl::GetFlag(FLAGS_verbose) ? result.violation_messages.size() : 1;
      for (size_t v = 0; v < shown && v < result.violation_messages.size();
           ++v) {
        std::printf("seed %llu violation: %s\n",
                    static_cast<unsigned long long>(options.seed),
                    result.violation_messages[v].c_str());
      }
      std::printf(
          "reproduce: paxos_sim --seeds=1 --first_seed=%llu --steps=%d "
          "--replicas=%d --bug=%s%s --verbose\n",
          static_cast<unsigned long long>(options.seed), steps, replicas,
          lockd::paxos::sim::BugName(*bug).c_str(),
          options.membership ? "" : " --membership=false");
    }
  }
  std::vector<std::string> fault_parts;
  for (const auto& [kind, count] : faults) {
    fault_parts.push_back(absl::StrCat(kind, "=", count));
  }
  std::printf("replicas=%d bug=%s elapsed=%.1fs\n", replicas,
              lockd::paxos::sim::BugName(*bug).c_str(),
              absl::ToDoubleSeconds(absl::Now() - start));
  std::printf("faults: %s\n", absl::StrJoin(fault_parts, " ").c_str());
  std::printf(
      "chosen_slots=%llu proposals=%llu acknowledged=%llu "
      "leader_changes=%llu snapshots_installed=%llu max_heal_ticks=%llu "
      "membership_changes=%llu failing_seeds=%llu\n",
      static_cast<unsigned long long>(chosen),
      static_cast<unsigned long long>(proposals),
      static_cast<unsigned long long>(acknowledged),
      static_cast<unsigned long long>(leader_changes),
      static_cast<unsigned long long>(snapshots),
      static_cast<unsigned long long>(max_heal_ticks),
      static_cast<unsigned long long>(membership_changes),
      static_cast<unsigned long long>(failing_seeds));
  std::printf("seeds=%d steps=%llu violations=%llu\n", seeds,
              static_cast<unsigned long long>(total_steps),
              static_cast<unsigned long long>(violations));
  return violations > 0 ? 1 : 0;
}
