// lockctl get, put, ls, rm, stat and watch.

#include <deque>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cli/context.h"
#include "cli/supervisor.h"

namespace lockd::cli {
namespace {

// Sessions of one-shot writes: short, and closed when the write is done.
constexpr absl::Duration kWriteSessionTtl = absl::Seconds(10);

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
  return absl::AbortedError(
      "the node was created and deleted concurrently twice; try again");
}

std::string EventJson(const v1::Event& event) {
  JsonObject json;
  json.Uint("sequence", event.sequence())
      .String("type", v1::Event::Type_Name(event.type()))
      .String("path", event.path())
      .String("time", FormatTimeMs(event.time_ms()));
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
      .String("created", FormatTimeMs(meta.created_ms()))
      .String("modified", FormatTimeMs(meta.modified_ms()))
      .Uint("content_size", meta.content_size())
      .str();
}

int RunGet(Context& context) {
  const std::string& path = context.args.positional[0];
  absl::StatusOr<v1::GetNodeResponse> node = context.client->Get(path);
  if (!node.ok()) return context.Fail(node.status());
  if (context.out.json()) {
    context.out.Json(JsonObject()
                         .String("path", path)
                         .String("content", node->content())
                         .Raw("meta", NodeMetaJson(node->meta()))
                         .str());
    return kExitOk;
  }
  std::string content = node->content();
  if (!content.empty() && content.back() != '\n') content += '\n';
  std::fwrite(content.data(), 1, content.size(), stdout);
  return kExitOk;
}

int RunPut(Context& context) {
  const ParsedArgs& args = context.args;
  const std::string& path = args.positional[0];
  absl::StatusOr<uint64_t> expected = args.Uint("expect", 0);
  if (!expected.ok())
    return context.Usage(std::string(expected.status().message()));
  if (args.Has("expect") && *expected == 0) {
    return context.Usage(
        "--expect=0 matches no node (generations start at 1); use --create "
        "for \"only if it does not exist\"");
  }
  if (args.Has("expect") && args.Has("create")) {
    return context.Usage("--expect and --create exclude each other");
  }
  std::string content;
  if (args.positional.size() == 2) {
    content = args.positional[1];
  } else {
    content.assign(std::istreambuf_iterator<char>(std::cin),
                   std::istreambuf_iterator<char>());
  }
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
  absl::StatusOr<uint64_t> expected = context.args.Uint("expect", 0);
  if (!expected.ok())
    return context.Usage(std::string(expected.status().message()));
  if (context.args.Has("expect") && *expected == 0) {
    return context.Usage("--expect=0 matches no node (generations start at 1)");
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
  table.Print(stdout);
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
  absl::StatusOr<std::unique_ptr<Session>> session = [&] {
    SessionOptions session_options;
    session_options.ttl = *ttl;
    session_options.client_name = "lockctl watch " + path;
    session_options.on_event = [&](const v1::Event& event) {
      absl::MutexLock lock(&mu);
      events.push_back(event);
    };
    return Session::Create(context.client.get(), session_options);
  }();
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
    const SessionState state = (*session)->state();
    lost = state == SessionState::kExpired || state == SessionState::kClosed;
    return lost;
  });
  if (lost) {
    return context.out.Error(
        context.what,
        absl::UnavailableError(absl::StrCat(
            "session ", (*session)->id(),
            " was lost (no leader answered within its lease and grace "
            "period); events may have been missed")),
        kExitSessionLost);
  }
  (*session)->Close().IgnoreError();
  return kExitOk;
}

}  // namespace lockd::cli
