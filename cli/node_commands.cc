// lockctl get, put, ls, rm, stat and watch.

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "cli/context.h"
#include "cli/supervisor.h"
#include "sessions/limits.h"

namespace lockd::cli {
namespace {

// Sessions of one-shot writes: short, and closed when the write is done.
constexpr absl::Duration kWriteSessionTtl = absl::Seconds(10);

// The cell's content limit (docs/sessions.md, "Limits"); lockctl checks it
// itself so that a value too large always fails the same way.
constexpr size_t kMaxContentBytes = sessions::Limits().max_content_bytes;

// The usage error for content over kMaxContentBytes.
std::string ContentTooLarge() {
  return absl::StrCat("the value is larger than ", kMaxContentBytes,
                      " bytes, the cell's content limit (max_content_bytes)");
}

// Standard input up to `max_bytes` + 1 bytes (one more tells that it is
// longer).
absl::StatusOr<std::string> ReadStdin(size_t max_bytes) {
  std::string content;
  char buffer[16384];
  while (content.size() <= max_bytes) {
    const size_t want =
        std::min(sizeof(buffer), max_bytes + 1 - content.size());
    const ssize_t n = read(STDIN_FILENO, buffer, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("cannot read standard input: ", std::strerror(errno)));
    }
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
  }
  return content;
}

// The --expect=GEN of put and rm; 0 when not given. INVALID_ARGUMENT for a
// value that is no generation, with `hint` added for --expect=0.
absl::StatusOr<uint64_t> ExpectedGeneration(const ParsedArgs& args,
                                            absl::string_view hint) {
  absl::StatusOr<uint64_t> expected = args.Uint("expect", 0);
  if (!expected.ok()) return expected.status();
  if (args.Has("expect") && *expected == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--expect=0 matches no node (generations start at 1)", hint));
  }
  return *expected;
}

std::string ParentOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Creates every missing ancestor of `path` (empty, permanent).
absl::Status CreateParents(Session& session, const std::string& path) {
  std::vector<std::string> missing;
  for (std::string parent = ParentOf(path); parent != "/";
       parent = ParentOf(parent)) {
    absl::StatusOr<v1::StatNodeResponse> stat = session.StatNode(parent);
    if (stat.ok()) break;
    if (stat.status().code() != absl::StatusCode::kNotFound) {
      return stat.status();
    }
    missing.push_back(parent);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    absl::StatusOr<v1::CreateNodeResponse> created = session.CreateNode(*it);
    if (!created.ok() &&
        created.status().code() != absl::StatusCode::kAlreadyExists) {
      return created.status();
    }
  }
  return absl::OkStatus();
}

// Create-or-set as `put` describes it; returns the node's new metadata.
absl::StatusOr<v1::NodeMeta> Put(Session& session, const ParsedArgs& args,
                                 const std::string& path,
                                 const std::string& content,
                                 uint64_t expected_generation) {
  if (args.Has("parents")) {
    if (absl::Status status = CreateParents(session, path); !status.ok()) {
      return status;
    }
  }
  if (args.Has("create")) {
    absl::StatusOr<v1::CreateNodeResponse> created =
        session.CreateNode(path, content);
    if (!created.ok()) return created.status();
    return created->meta();
  }
  if (expected_generation != 0) {
    return session.SetNode(path, content, expected_generation);
  }
  // Set, else create; a create that lost a race to another creator sets.
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::StatusOr<v1::NodeMeta> set = session.SetNode(path, content);
    if (set.status().code() != absl::StatusCode::kNotFound) return set;
    absl::StatusOr<v1::CreateNodeResponse> created =
        session.CreateNode(path, content);
    if (created.ok()) return created->meta();
    if (created.status().code() != absl::StatusCode::kAlreadyExists) {
      return created.status();
    }
  }
  // Not a cell failure (which AbortedError would report): the node changed
  // under the write.
  return absl::FailedPreconditionError(
      "the node was created and deleted concurrently twice; try again");
}

std::string EventJson(const v1::Event& event) {
  JsonObject json;
  json.Uint("sequence", event.sequence())
      .String("type", v1::Event::Type_Name(event.type()))
      .String("path", event.path())
      .TimeMs("time", event.time_ms());
  if (event.other_session_id() != 0) {
    json.Uint("other_session_id", event.other_session_id());
  }
  return json.str();
}

}  // namespace

std::string NodeMetaJson(const v1::NodeMeta& meta) {
  return JsonObject()
      .Uint("instance", meta.instance())
      .Uint("content_generation", meta.content_generation())
      .Uint("lock_generation", meta.lock_generation())
      .Uint("checksum", meta.checksum())
      .Uint("ephemeral_owner", meta.ephemeral_owner())
      .Uint("num_children", meta.num_children())
      .TimeMs("created", meta.created_ms())
      .TimeMs("modified", meta.modified_ms())
      .Uint("content_size", meta.content_size())
      .String("read_acl", meta.read_acl())
      .String("write_acl", meta.write_acl())
      .String("change_acl", meta.change_acl())
      .Uint("acl_generation", meta.acl_generation())
      .str();
}

namespace {

// True once a command's session can no longer be relied on.
bool SessionEnded(const Session& session) {
  const SessionState state = session.state();
  return state == SessionState::kExpired || state == SessionState::kClosed;
}

// The error of a command whose session was lost; `consequence` says what
// that meant.
int SessionLost(const Context& context, const Session& session,
                absl::string_view consequence) {
  return context.out.Error(
      context.what,
      absl::UnavailableError(absl::StrCat(
          "session ", session.id(),
          " was lost (no leader answered within its lease and grace "
          "period); ",
          consequence)),
      kExitSessionLost);
}

// An ACL name as a person reads it.
std::string AclName(const std::string& name) {
  return name.empty() ? "- (everyone)"
                      : absl::StrCat(name, " (/acl/", name, ")");
}

}  // namespace

int RunGet(Context& context) {
  const std::string& path = context.args.positional[0];
  absl::StatusOr<v1::GetNodeResponse> node = context.client->Get(path);
  if (!node.ok()) return context.Fail(node.status());
  const std::string& content = node->content();
  if (context.out.json()) {
    JsonObject json;
    json.String("path", path);
    // JSON strings hold text: other bytes would not survive.
    if (IsValidUtf8(content)) {
      json.String("content", content);
    } else {
      json.String("content_base64", absl::Base64Escape(content));
    }
    context.out.Json(json.Raw("meta", NodeMetaJson(node->meta())).str());
    return kExitOk;
  }
  // Byte for byte, except that a terminal gets the line ended.
  std::fwrite(content.data(), 1, content.size(), stdout);
  if (isatty(STDOUT_FILENO) && !content.empty() && content.back() != '\n') {
    std::fputc('\n', stdout);
  }
  if (std::fflush(stdout) != 0) {
    return context.out.Error(
        context.what,
        absl::InternalError(absl::StrCat("cannot write standard output: ",
                                         std::strerror(errno))),
        kExitError);
  }
  return kExitOk;
}

int RunPut(Context& context) {
  const ParsedArgs& args = context.args;
  const std::string& path = args.positional[0];
  absl::StatusOr<uint64_t> expected = ExpectedGeneration(
      args, "; use --create for \"only if it does not exist\"");
  if (!expected.ok()) {
    return context.Usage(std::string(expected.status().message()));
  }
  if (args.Has("expect") && args.Has("create")) {
    return context.Usage("--expect and --create exclude each other");
  }
  std::string content;
  if (args.positional.size() == 2) {
    content = args.positional[1];
  } else {
    // Before waiting on standard input: a put that cannot succeed says so.
    const std::string parent = ParentOf(path);
    if (!args.Has("parents") && parent != "/") {
      absl::StatusOr<v1::StatNodeResponse> stat = context.client->Stat(parent);
      if (absl::IsNotFound(stat.status())) {
        return context.Fail(absl::NotFoundError(absl::StrCat(
            "the parent ", parent,
            " does not exist; create it first, or use --parents")));
      }
    }
    if (isatty(STDIN_FILENO)) {
      absl::FPrintF(stderr,
                    "lockctl: reading the value from standard input; end "
                    "with Ctrl-D\n");
    }
    absl::StatusOr<std::string> read = ReadStdin(kMaxContentBytes);
    if (!read.ok()) {
      return context.out.Error(context.what, read.status(), kExitError);
    }
    content = *std::move(read);
  }
  if (content.size() > kMaxContentBytes)
    return context.Usage(ContentTooLarge());
  absl::StatusOr<std::unique_ptr<Session>> session =
      context.OpenSession(kWriteSessionTtl, absl::Seconds(45));
  if (!session.ok()) return context.Fail(session.status());
  absl::StatusOr<v1::NodeMeta> meta =
      Put(**session, args, path, content, *expected);
  (*session)->Close().IgnoreError();
  if (!meta.ok()) return context.Fail(meta.status());
  if (context.out.json()) {
    context.out.Json(JsonObject()
                         .String("path", path)
                         .Raw("meta", NodeMetaJson(*meta))
                         .str());
  } else {
    context.out.Line(absl::StrCat(path, ": content generation ",
                                  meta->content_generation()));
  }
  return kExitOk;
}

int RunList(Context& context) {
  const std::string path =
      context.args.positional.empty() ? "/" : context.args.positional[0];
  absl::StatusOr<std::vector<std::string>> names = context.client->List(path);
  if (!names.ok()) return context.Fail(names.status());
  if (context.out.json()) {
    std::vector<std::string> elements;
    for (const std::string& name : *names) elements.push_back(JsonString(name));
    context.out.Json(JsonObject()
                         .String("path", path)
                         .Raw("children", JsonArray(elements))
                         .str());
    return kExitOk;
  }
  for (const std::string& name : *names) context.out.Line(name);
  return kExitOk;
}

int RunRemove(Context& context) {
  const std::string& path = context.args.positional[0];
  absl::StatusOr<uint64_t> expected = ExpectedGeneration(context.args, "");
  if (!expected.ok()) {
    return context.Usage(std::string(expected.status().message()));
  }
  absl::StatusOr<std::unique_ptr<Session>> session =
      context.OpenSession(kWriteSessionTtl, absl::Seconds(45));
  if (!session.ok()) return context.Fail(session.status());
  const absl::Status status = (*session)->DeleteNode(path, *expected);
  (*session)->Close().IgnoreError();
  if (!status.ok()) return context.Fail(status);
  if (context.out.json()) {
    context.out.Json(
        JsonObject().String("path", path).Bool("deleted", true).str());
  } else {
    context.out.Line(absl::StrCat(path, ": deleted"));
  }
  return kExitOk;
}

int RunStat(Context& context) {
  const std::string& path = context.args.positional[0];
  absl::StatusOr<v1::StatNodeResponse> stat = context.client->Stat(path);
  if (!stat.ok()) return context.Fail(stat.status());
  const v1::NodeMeta& meta = stat->meta();
  if (context.out.json()) {
    context.out.Json(JsonObject()
                         .String("path", path)
                         .Raw("meta", NodeMetaJson(meta))
                         .str());
    return kExitOk;
  }
  Table table({"FIELD", "VALUE"});
  table.AddRow({"path", path});
  table.AddRow({"instance", absl::StrCat(meta.instance())});
  table.AddRow({"content generation", absl::StrCat(meta.content_generation())});
  table.AddRow({"lock generation", absl::StrCat(meta.lock_generation())});
  table.AddRow({"content size", absl::StrCat(meta.content_size())});
  table.AddRow({"checksum (crc32c)", absl::StrCat(meta.checksum())});
  table.AddRow({"ephemeral owner",
                meta.ephemeral_owner() == 0
                    ? "-"
                    : absl::StrCat("session ", meta.ephemeral_owner())});
  table.AddRow({"children", absl::StrCat(meta.num_children())});
  table.AddRow({"created", FormatTimeMs(meta.created_ms())});
  table.AddRow({"modified", FormatTimeMs(meta.modified_ms())});
  table.AddRow({"read ACL", AclName(meta.read_acl())});
  table.AddRow({"write ACL", AclName(meta.write_acl())});
  table.AddRow({"change-ACL ACL", AclName(meta.change_acl())});
  table.AddRow({"ACL generation", absl::StrCat(meta.acl_generation())});
  table.Print(stdout);
  return kExitOk;
}

int RunCreate(Context& context) {
  const ParsedArgs& args = context.args;
  const std::string& path = args.positional[0];
  const std::string content =
      args.positional.size() == 2 ? args.positional[1] : "";
  if (content.size() > kMaxContentBytes) {
    return context.Usage(ContentTooLarge());
  }
  const bool ephemeral = args.Has("ephemeral");
  absl::StatusOr<absl::Duration> ttl = args.Duration("ttl", absl::Seconds(10));
  if (!ttl.ok()) return context.Usage(std::string(ttl.status().message()));
  if (!ephemeral && args.Has("ttl")) {
    return context.Usage("--ttl is for --ephemeral (the node's session)");
  }
  absl::StatusOr<std::unique_ptr<Session>> session = context.OpenSession(
      ephemeral ? *ttl : kWriteSessionTtl, absl::Seconds(45));
  if (!session.ok()) return context.Fail(session.status());
  absl::StatusOr<v1::CreateNodeResponse> created =
      (*session)->CreateNode(path, content, ephemeral, args.Has("sequential"));
  if (!created.ok()) {
    (*session)->Close().IgnoreError();
    return context.Fail(created.status());
  }
  if (context.out.json()) {
    context.out.Json(
        JsonObject()
            .String("path", created->path())
            .Uint("ephemeral_owner", ephemeral ? (*session)->id() : 0)
            .Raw("meta", NodeMetaJson(created->meta()))
            .str());
  } else {
    context.out.Line(created->path());
  }
  if (!ephemeral) {
    (*session)->Close().IgnoreError();
    return kExitOk;
  }
  // The node lives as long as this session: hold it until interrupted.
  absl::FPrintF(stderr,
                "lockctl: %s exists while this runs (session %d); Ctrl-C "
                "deletes it\n",
                created->path(), (*session)->id());
  bool lost = false;
  WaitInterruptibly([&] { return lost = SessionEnded(**session); });
  if (lost) {
    return SessionLost(context, **session,
                       absl::StrCat("the cell deleted ", created->path()));
  }
  (*session)->Close().IgnoreError();
  return kExitOk;
}

int RunAcl(Context& context) {
  const ParsedArgs& args = context.args;
  const std::string& verb = args.positional[0];
  const std::string& path = args.positional[1];
  if (verb != "get" && verb != "set") {
    return context.Usage(absl::StrCat("unknown acl action \"", verb,
                                      "\": use `acl get PATH` or `acl set "
                                      "PATH --read=NAME ...`"));
  }
  const bool changes =
      args.Has("read") || args.Has("write") || args.Has("change");
  if (verb == "get" && changes) {
    return context.Usage("--read, --write and --change are for `acl set`");
  }
  if (verb == "set" && !changes) {
    return context.Usage(
        "acl set needs at least one of --read, --write, --change");
  }
  absl::StatusOr<v1::StatNodeResponse> stat = context.client->Stat(path);
  if (!stat.ok()) return context.Fail(stat.status());
  v1::NodeMeta meta = stat->meta();
  if (verb == "set") {
    Session::Acl acl{args.Get("read", meta.read_acl()),
                     args.Get("write", meta.write_acl()),
                     args.Get("change", meta.change_acl())};
    absl::StatusOr<std::unique_ptr<Session>> session =
        context.OpenSession(kWriteSessionTtl, absl::Seconds(45));
    if (!session.ok()) return context.Fail(session.status());
    // Against the generation just read: a concurrent change is not lost.
    absl::StatusOr<v1::NodeMeta> set =
        (*session)->SetAcl(path, acl, meta.acl_generation());
    (*session)->Close().IgnoreError();
    if (!set.ok()) return context.Fail(set.status());
    meta = *std::move(set);
  }
  if (context.out.json()) {
    context.out.Json(JsonObject()
                         .String("path", path)
                         .String("read_acl", meta.read_acl())
                         .String("write_acl", meta.write_acl())
                         .String("change_acl", meta.change_acl())
                         .Uint("acl_generation", meta.acl_generation())
                         .str());
    return kExitOk;
  }
  Table table({"RIGHT", "ACL"});
  table.AddRow({"read", AclName(meta.read_acl())});
  table.AddRow({"write", AclName(meta.write_acl())});
  table.AddRow({"change-ACL", AclName(meta.change_acl())});
  table.Print(stdout);
  std::printf("ACL generation %llu\n",
              static_cast<unsigned long long>(meta.acl_generation()));
  return kExitOk;
}

int RunWatch(Context& context) {
  const std::string& path = context.args.positional[0];
  absl::StatusOr<uint64_t> count = context.args.Uint("count", 0);
  if (!count.ok()) return context.Usage(std::string(count.status().message()));
  absl::StatusOr<absl::Duration> ttl =
      context.args.Duration("ttl", absl::Seconds(10));
  if (!ttl.ok()) return context.Usage(std::string(ttl.status().message()));

  absl::Mutex mu;
  std::deque<v1::Event> events;
  absl::StatusOr<std::unique_ptr<Session>> session = context.OpenSession(
      *ttl, SessionOptions().grace_period, [&](const v1::Event& event) {
        absl::MutexLock lock(&mu);
        events.push_back(event);
      });
  if (!session.ok()) return context.Fail(session.status());
  if (absl::Status status = (*session)->Watch(path); !status.ok()) {
    (*session)->Close().IgnoreError();
    return context.Fail(status);
  }
  if (!context.out.json()) {
    absl::FPrintF(stderr, "lockctl: watching %s (session %d); Ctrl-C stops\n",
                  path, (*session)->id());
  }
  uint64_t printed = 0;
  bool lost = false;
  // Interrupting a watch is its normal end (exit code 0).
  WaitInterruptibly([&] {
    std::deque<v1::Event> ready;
    {
      absl::MutexLock lock(&mu);
      ready.swap(events);
    }
    for (const v1::Event& event : ready) {
      // Where events were dropped; the events after the gap still come.
      if (event.type() == v1::Event::EVENTS_LOST) {
        absl::FPrintF(stderr,
                      "lockctl: %s: %d events were dropped (the cell keeps "
                      "1024 per session); re-read the node\n",
                      context.what, event.lost_count());
        if (context.out.json()) {
          context.out.Json(
              JsonObject().Uint("events_lost", event.lost_count()).str());
        }
        continue;
      }
      if (context.out.json()) {
        context.out.Json(EventJson(event));
      } else {
        context.out.Line(absl::StrCat(FormatTimeMs(event.time_ms()), "  ",
                                      v1::Event::Type_Name(event.type()), "  ",
                                      event.path()));
      }
      if (++printed == *count) return true;
      // The watch ends with the node.
      if (event.type() == v1::Event::NODE_DELETED && event.path() == path) {
        return true;
      }
    }
    return lost = SessionEnded(**session);
  });
  if (lost) {
    return SessionLost(context, **session, "events may have been missed");
  }
  (*session)->Close().IgnoreError();
  return kExitOk;
}

}  // namespace lockd::cli
