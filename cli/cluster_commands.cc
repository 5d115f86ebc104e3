// lockctl status, members, member, sessions and locks.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/context.h"
#include "lockd/crc32c.h"

namespace lockd::cli {
namespace {

struct ReplicaStatus {
  std::string address;
  absl::StatusOr<v1::StatusResponse> status;
};

// Cluster.Status of every address, asked in parallel.
std::vector<ReplicaStatus> AskAll(Client& client,
                                  const std::vector<std::string>& addresses) {
  std::vector<ReplicaStatus> results(addresses.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < addresses.size(); ++i) {
    results[i].address = addresses[i];
    threads.emplace_back([&client, &results, i] {
      results[i].status = client.StatusOf(results[i].address);
    });
  }
  for (std::thread& thread : threads) thread.join();
  return results;
}

// A replica of the cell, as the membership names it.
struct MemberAddress {
  // Unset when no replica answered with the membership, so that only the
  // configured endpoints are known.
  std::optional<uint32_t> id;
  std::string address;
};

// The cell's members as the answering replicas report them, by id; the
// configured endpoints (ids unknown) if none answered.
std::vector<MemberAddress> Membership(
    const std::vector<ReplicaStatus>& answers,
    const std::vector<std::string>& endpoints) {
  std::map<uint32_t, std::string> by_id;
  for (const ReplicaStatus& answer : answers) {
    if (!answer.status.ok()) continue;
    for (const v1::Member& member : answer.status->members()) {
      by_id.emplace(member.id(), member.address());
    }
  }
  std::vector<MemberAddress> members;
  for (const auto& [id, address] : by_id) members.push_back({id, address});
  if (members.empty()) {
    for (const std::string& endpoint : endpoints) {
      members.push_back({std::nullopt, endpoint});
    }
  }
  return members;
}

// The log and session fields of a replica's status.
JsonObject& AddProgress(JsonObject& json, const v1::StatusResponse& status) {
  return json.Uint("epoch", status.epoch())
      .String("epoch_ballot", FormatEpoch(status.epoch()))
      .Uint("commit_index", status.commit_index())
      .Uint("applied_index", status.applied_index())
      .Uint("snapshot_index", status.snapshot_index())
      .Uint("sessions", status.sessions());
}

// A replica's status for `members`, with its view of who leads.
std::string StatusJson(const v1::StatusResponse& status) {
  JsonObject json;
  json.Uint("id", status.id())
      .String("role", status.role())
      .Bool("has_lease", status.has_lease())
      .Uint("leader_id", status.leader_id())
      .String("leader_address", status.leader_address());
  return AddProgress(json, status).str();
}

// The LOCKS cell of `lockctl sessions`.
std::string LockList(const v1::SessionInfo& session) {
  if (session.num_locks() == 0) return "-";
  std::string list = absl::StrJoin(session.locks(), ",");
  if (static_cast<uint64_t>(session.locks_size()) < session.num_locks()) {
    absl::StrAppend(&list, ",... (", session.num_locks(), " in all)");
  }
  return list;
}

void PrintTruncated(const char* what) {
  absl::FPrintF(stderr,
                "lockctl: the cell listed only the first %s (answer size "
                "limit; docs/sessions.md, \"Listings\")\n",
                what);
}

}  // namespace

std::string ModeName(v1::LockMode mode) {
  switch (mode) {
    case v1::EXCLUSIVE:
      return "exclusive";
    case v1::SHARED:
      return "shared";
    default:
      return "unspecified";
  }
}

int RunStatus(Context& context) {
  const std::vector<ReplicaStatus> answers =
      AskAll(*context.client, context.client_options.endpoints);
  const ReplicaStatus* leader = nullptr;
  size_t answering = 0;
  for (const ReplicaStatus& answer : answers) {
    if (!answer.status.ok()) continue;
    ++answering;
    if (answer.status->role() == "leader" && answer.status->has_lease()) {
      leader = &answer;
    }
  }
  ReplicaStatus named;
  if (leader == nullptr) {
    // A replica outside the configured endpoints may lead: ask it.
    for (const ReplicaStatus& answer : answers) {
      if (!answer.status.ok() || answer.status->leader_address().empty()) {
        continue;
      }
      named = AskAll(*context.client, {answer.status->leader_address()})[0];
      if (named.status.ok() && named.status->role() == "leader" &&
          named.status->has_lease()) {
        leader = &named;
      }
      break;
    }
  }
  if (leader == nullptr) {
    std::string why =
        absl::StrCat(answering, " of ", answers.size(), " endpoints answered");
    for (const ReplicaStatus& answer : answers) {
      if (!answer.status.ok()) {
        absl::StrAppend(&why, "; ", answer.address, ": ",
                        answer.status.status().message());
      }
    }
    return context.out.Error("status",
                             absl::UnavailableError(absl::StrCat(
                                 "no replica leads with a lease (", why, ")")),
                             kExitUnavailable);
  }
  const v1::StatusResponse& status = *leader->status;
  if (context.out.json()) {
    // The leader's own view of the leader would only repeat id and address.
    JsonObject leader_json;
    leader_json.Uint("id", status.id())
        .String("address", leader->address)
        .String("role", status.role())
        .Bool("has_lease", status.has_lease());
    context.out.Json(JsonObject()
                         .Raw("leader", AddProgress(leader_json, status).str())
                         .Uint("members", status.members_size())
                         .Uint("endpoints_answering", answering)
                         .Uint("endpoints", answers.size())
                         .str());
    return kExitOk;
  }
  Table table({"FIELD", "VALUE"});
  table.AddRow(
      {"leader", absl::StrCat(status.id(), " (", leader->address, ")")});
  table.AddRow({"epoch", FormatEpoch(status.epoch())});
  table.AddRow({"commit index", absl::StrCat(status.commit_index())});
  table.AddRow({"applied index", absl::StrCat(status.applied_index())});
  table.AddRow({"snapshot index", absl::StrCat(status.snapshot_index())});
  table.AddRow({"sessions", absl::StrCat(status.sessions())});
  table.AddRow({"members", absl::StrCat(status.members_size())});
  table.AddRow(
      {"endpoints answering", absl::StrCat(answering, " of ", answers.size())});
  table.Print(stdout);
  return kExitOk;
}

int RunMembers(Context& context) {
  const std::vector<ReplicaStatus> first =
      AskAll(*context.client, context.client_options.endpoints);
  const std::vector<MemberAddress> members =
      Membership(first, context.client_options.endpoints);
  std::vector<std::string> addresses;
  for (const MemberAddress& member : members) {
    addresses.push_back(member.address);
  }
  const std::vector<ReplicaStatus> answers = AskAll(*context.client, addresses);

  size_t answering = 0;
  std::vector<std::string> json_rows;
  Table table({"ID", "ADDRESS", "ROLE", "LEASE", "EPOCH", "COMMIT", "APPLIED",
               "SNAPSHOT", "HEALTH"});
  for (size_t i = 0; i < members.size(); ++i) {
    const std::string& address = members[i].address;
    const ReplicaStatus& answer = answers[i];
    // A replica that answered says who it is.
    const std::optional<uint32_t> id =
        answer.status.ok() ? std::optional<uint32_t>(answer.status->id())
                           : members[i].id;
    JsonObject row;
    if (id.has_value()) {
      row.Uint("id", *id);
    } else {
      row.Null("id");
    }
    row.String("address", address);
    if (answer.status.ok()) {
      ++answering;
      const v1::StatusResponse& s = *answer.status;
      table.AddRow({absl::StrCat(s.id()), address, s.role(),
                    s.has_lease() ? "yes" : "no", FormatEpoch(s.epoch()),
                    absl::StrCat(s.commit_index()),
                    absl::StrCat(s.applied_index()),
                    absl::StrCat(s.snapshot_index()), "ok"});
      row.String("health", "ok").Raw("status", StatusJson(s));
    } else {
      const std::string health =
          absl::StrCat(absl::StatusCodeToString(answer.status.status().code()),
                       ": ", answer.status.status().message());
      table.AddRow({id.has_value() ? absl::StrCat(*id) : "?", address, "-", "-",
                    "-", "-", "-", "-", health});
      row.String("health", health);
    }
    json_rows.push_back(row.str());
  }
  if (context.out.json()) {
    context.out.Json(JsonObject().Raw("members", JsonArray(json_rows)).str());
  } else {
    table.Print(stdout);
  }
  if (answering == 0) {
    return context.out.Error("members",
                             absl::UnavailableError("no replica answered"),
                             kExitUnavailable);
  }
  return kExitOk;
}

namespace {

// The leader's Cluster.Status (the leader's view of every member's commit
// point), found through any endpoint.
absl::StatusOr<v1::StatusResponse> LeaderStatus(Context& context) {
  const std::vector<ReplicaStatus> answers =
      AskAll(*context.client, context.client_options.endpoints);
  for (const ReplicaStatus& answer : answers) {
    if (answer.status.ok() && answer.status->role() == "leader") {
      return answer.status;
    }
  }
  for (const ReplicaStatus& answer : answers) {
    if (answer.status.ok() && !answer.status->leader_address().empty()) {
      absl::StatusOr<v1::StatusResponse> leader =
          context.client->StatusOf(answer.status->leader_address());
      if (leader.ok() && leader->role() == "leader") return leader;
    }
  }
  return absl::UnavailableError("no replica leads; retry shortly");
}

void PrintConfiguration(
    Context& context,
    const google::protobuf::RepeatedPtrField<v1::Member>& members,
    const google::protobuf::RepeatedField<uint32_t>& retired, uint32_t leader,
    uint64_t leader_commit, bool with_progress) {
  if (context.out.json()) {
    std::vector<std::string> rows;
    for (const v1::Member& member : members) {
      JsonObject row;
      row.Uint("id", member.id())
          .String("address", member.address())
          .String("peer_address", member.peer_address())
          .String("role", member.voter() ? "voter" : "learner")
          .Bool("leader", member.id() == leader);
      if (with_progress) row.Uint("commit_index", member.commit_index());
      rows.push_back(row.str());
    }
    std::vector<std::string> retired_ids;
    for (uint32_t id : retired) retired_ids.push_back(absl::StrCat(id));
    context.out.Json(
        JsonObject()
            .Raw("members", JsonArray(rows))
            .Raw("retired_ids", "[" + absl::StrJoin(retired_ids, ",") + "]")
            .str());
    return;
  }
  Table table({"ID", "ADDRESS", "PEER ADDRESS", "ROLE", "BEHIND"});
  for (const v1::Member& member : members) {
    std::string role = member.voter() ? "voter" : "learner";
    if (member.id() == leader) role = "voter (leader)";
    std::string behind = "-";
    if (with_progress && member.id() != leader) {
      behind =
          member.commit_index() == 0 && leader_commit > 0
              ? "unknown"
              : absl::StrCat(leader_commit -
                             std::min(leader_commit, member.commit_index()));
    } else if (with_progress) {
      behind = "0";
    }
    table.AddRow({absl::StrCat(member.id()), member.address(),
                  member.peer_address(), role, behind});
  }
  table.Print(stdout);
  if (!retired.empty()) {
    absl::PrintF("retired ids (never members again): %s\n",
                 absl::StrJoin(retired, ", "));
  }
}

absl::StatusOr<uint32_t> ParseMemberId(const std::string& text) {
  uint32_t id = 0;
  if (!absl::SimpleAtoi(text, &id) || id == 0 || id > 0xffff) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a member id (a number in [1, 65535])"));
  }
  return id;
}

}  // namespace

int RunMember(Context& context) {
  const std::vector<std::string>& args = context.args.positional;
  const std::string& verb = args[0];
  const size_t operands = args.size() - 1;
  const auto wrong_count = [&](const char* form) {
    return context.Usage(absl::StrCat("usage: lockctl member ", form));
  };
  if (verb == "list") {
    if (operands != 0) return wrong_count("list");
    absl::StatusOr<v1::StatusResponse> status = LeaderStatus(context);
    if (!status.ok()) return context.Fail(status.status());
    PrintConfiguration(context, status->members(), status->retired_ids(),
                       status->id(), status->commit_index(),
                       /*with_progress=*/true);
    if (status->change_in_flight() && !context.out.json()) {
      absl::PrintF("a membership change is in flight\n");
    }
    return kExitOk;
  }
  if (verb == "handover") {
    if (operands > 1) return wrong_count("handover [ID]");
    uint32_t to = 0;
    if (operands == 1) {
      absl::StatusOr<uint32_t> id = ParseMemberId(args[1]);
      if (!id.ok()) return context.Usage(std::string(id.status().message()));
      to = *id;
    }
    absl::StatusOr<v1::TransferLeadershipResponse> handed =
        context.client->TransferLeadership(to);
    if (!handed.ok()) return context.Fail(handed.status());
    if (context.out.json()) {
      context.out.Json(JsonObject().Uint("handed_to", handed->to()).str());
    } else {
      absl::PrintF("leadership handed to replica %d\n", handed->to());
    }
    return kExitOk;
  }
  absl::StatusOr<v1::MembershipResponse> changed;
  if (verb == "add") {
    if (operands != 3) return wrong_count("add ID ADDRESS PEER_ADDRESS");
    absl::StatusOr<uint32_t> id = ParseMemberId(args[1]);
    if (!id.ok()) return context.Usage(std::string(id.status().message()));
    changed = context.client->AddMember(*id, args[2], args[3]);
  } else if (verb == "promote" || verb == "remove") {
    if (operands != 1) {
      return wrong_count(verb == "promote" ? "promote ID" : "remove ID");
    }
    absl::StatusOr<uint32_t> id = ParseMemberId(args[1]);
    if (!id.ok()) return context.Usage(std::string(id.status().message()));
    changed = verb == "promote" ? context.client->PromoteMember(*id)
                                : context.client->RemoveMember(*id);
  } else {
    return context.Usage(
        absl::StrCat("unknown member action \"", verb,
                     "\": use list, add, promote, remove or handover"));
  }
  if (!changed.ok()) return context.Fail(changed.status());
  PrintConfiguration(context, changed->members(), changed->retired_ids(), 0, 0,
                     /*with_progress=*/false);
  return kExitOk;
}

int RunSnapshot(Context& context) {
  const std::vector<std::string>& args = context.args.positional;
  if (args[0] != "save") {
    return context.Usage(absl::StrCat("unknown snapshot action \"", args[0],
                                      "\": use `snapshot save FILE`"));
  }
  const std::string& file = args[1];
  absl::StatusOr<v1::SaveSnapshotResponse> chunk =
      context.client->SaveSnapshotChunk(0, 0);
  if (!chunk.ok()) return context.Fail(chunk.status());
  v1::Backup backup;
  backup.set_format("lockd-backup-1");
  *backup.mutable_header() = chunk->header();
  std::string* state = backup.mutable_state();
  *state = chunk->data();
  const uint64_t size = backup.header().size_bytes();
  while (state->size() < size) {
    chunk = context.client->SaveSnapshotChunk(backup.header().index(),
                                              state->size());
    if (!chunk.ok()) return context.Fail(chunk.status());
    if (chunk->data().empty()) break;
    state->append(chunk->data());
  }
  const uint32_t crc = crc32c::Value(state->data(), state->size());
  if (state->size() != size || crc != backup.header().crc32c()) {
    return context.out.Error(
        "snapshot save",
        absl::DataLossError(absl::StrFormat(
            "received %d of %d bytes with CRC32C %08x, the leader said %08x; "
            "nothing written, run it again",
            state->size(), size, crc, backup.header().crc32c())),
        kExitCasMismatch);
  }
  const std::string temporary = file + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out || !backup.SerializeToOstream(&out) || !out.flush()) {
      std::remove(temporary.c_str());
      return context.out.Error(
          "snapshot save",
          absl::PermissionDeniedError(absl::StrCat("cannot write ", temporary,
                                                   ": ", std::strerror(errno))),
          kExitError);
    }
  }
  if (std::rename(temporary.c_str(), file.c_str()) != 0) {
    return context.out.Error("snapshot save",
                             absl::PermissionDeniedError(absl::StrCat(
                                 "cannot rename ", temporary, " to ", file,
                                 ": ", std::strerror(errno))),
                             kExitError);
  }
  if (context.out.json()) {
    context.out.Json(
        JsonObject()
            .String("file", file)
            .Uint("index", backup.header().index())
            .Uint("size_bytes", size)
            .String("crc32c", absl::StrFormat("%08x", backup.header().crc32c()))
            .str());
  } else {
    absl::PrintF(
        "saved the state at log index %d (%d bytes, CRC32C %08x) "
        "to %s\n",
        backup.header().index(), size, backup.header().crc32c(), file);
  }
  return kExitOk;
}

int RunSessions(Context& context) {
  absl::StatusOr<v1::ListSessionsResponse> sessions =
      context.client->ListSessions();
  if (!sessions.ok()) return context.Fail(sessions.status());
  if (context.out.json()) {
    std::vector<std::string> rows;
    for (const v1::SessionInfo& session : sessions->sessions()) {
      std::vector<std::string> locks;
      for (const std::string& path : session.locks()) {
        locks.push_back(JsonString(path));
      }
      rows.push_back(
          JsonObject()
              .Uint("session_id", session.session_id())
              .String("client_name", session.client_name())
              .Int("ttl_ms", session.ttl_ms())
              .Int("lease_remaining_ms", session.lease_remaining_ms())
              .Raw("locks", JsonArray(locks))
              .Uint("num_locks", session.num_locks())
              .Uint("ephemeral_nodes", session.ephemeral_nodes())
              .str());
    }
    context.out.Json(JsonObject()
                         .Raw("sessions", JsonArray(rows))
                         .Bool("truncated", sessions->truncated())
                         .str());
    return kExitOk;
  }
  if (sessions->sessions().empty()) {
    std::printf("no sessions\n");
    return kExitOk;
  }
  Table table({"ID", "CLIENT", "TTL", "LEASE LEFT", "LOCKS", "EPHEMERAL"});
  for (const v1::SessionInfo& session : sessions->sessions()) {
    table.AddRow({absl::StrCat(session.session_id()), session.client_name(),
                  FormatDurationMs(session.ttl_ms()),
                  FormatDurationMs(session.lease_remaining_ms()),
                  LockList(session), absl::StrCat(session.ephemeral_nodes())});
  }
  table.Print(stdout);
  if (sessions->truncated()) PrintTruncated("sessions");
  return kExitOk;
}

int RunLocks(Context& context) {
  const std::string prefix =
      context.args.positional.empty() ? "/" : context.args.positional[0];
  absl::StatusOr<v1::ListLocksResponse> locks =
      context.client->ListLocks(prefix);
  if (!locks.ok()) return context.Fail(locks.status());
  if (context.out.json()) {
    std::vector<std::string> rows;
    for (const v1::LockInfo& lock : locks->locks()) {
      std::vector<std::string> holders, waiters;
      for (const v1::LockHolder& holder : lock.holders()) {
        holders.push_back(JsonObject()
                              .Uint("session_id", holder.session_id())
                              .String("mode", ModeName(holder.mode()))
                              .str());
      }
      for (const v1::LockWaiter& waiter : lock.waiters()) {
        waiters.push_back(
            JsonObject()
                .Uint("session_id", waiter.session_id())
                .String("mode", ModeName(waiter.mode()))
                .Int("wait_remaining_ms", waiter.wait_remaining_ms())
                .Bool("campaign", waiter.campaign())
                .str());
      }
      rows.push_back(
          JsonObject()
              .String("path", lock.path())
              .Uint("lock_generation", lock.lock_generation())
              .Raw("holders", JsonArray(holders))
              .Raw("waiters", JsonArray(waiters))
              .Int("lock_delay_remaining_ms", lock.lock_delay_remaining_ms())
              .str());
    }
    context.out.Json(JsonObject()
                         .Raw("locks", JsonArray(rows))
                         .Bool("truncated", locks->truncated())
                         .str());
    return kExitOk;
  }
  if (locks->locks().empty()) {
    std::printf(prefix == "/" ? "no locks\n" : "no locks under %s\n",
                prefix.c_str());
    return kExitOk;
  }
  Table table({"PATH", "GENERATION", "HOLDERS", "WAITERS", "LOCK-DELAY LEFT"});
  for (const v1::LockInfo& lock : locks->locks()) {
    std::vector<std::string> holders, waiters;
    for (const v1::LockHolder& holder : lock.holders()) {
      holders.push_back(
          absl::StrCat(holder.session_id(), "/", ModeName(holder.mode())));
    }
    for (const v1::LockWaiter& waiter : lock.waiters()) {
      waiters.push_back(
          absl::StrCat(waiter.session_id(), "/", ModeName(waiter.mode())));
    }
    table.AddRow({lock.path(), absl::StrCat(lock.lock_generation()),
                  holders.empty() ? "-" : absl::StrJoin(holders, ","),
                  waiters.empty() ? "-" : absl::StrJoin(waiters, ","),
                  lock.lock_delay_remaining_ms() == 0
                      ? "-"
                      : FormatDurationMs(lock.lock_delay_remaining_ms())});
  }
  table.Print(stdout);
  if (locks->truncated()) PrintTruncated("locks");
  return kExitOk;
}

}  // namespace lockd::cli
