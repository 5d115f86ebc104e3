#include "lockd/admin_http.h"

#include <utility>
#include <vector>

#include "CivetServer.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "paxos/ballot.h"
#include "paxos/membership.h"

namespace lockd {
namespace {

constexpr absl::Duration kLoopTimeout = absl::Seconds(1);

void Reply(mg_connection* connection, int code, const std::string& type,
           const std::string& body) {
  const char* reason = code == 200   ? "OK"
                       : code == 404 ? "Not Found"
                                     : "Service Unavailable";
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            code, reason, type.c_str(), body.size());
  mg_write(connection, body.data(), body.size());
}

std::string Escape(const std::string& text) {
  return absl::StrReplaceAll(
      text, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}});
}

// What the status page and /readyz show, taken on the loop thread.
struct View {
  Metrics::Sample sample;
  paxospb::Membership membership;
  std::vector<std::pair<uint32_t, uint64_t>> peer_commits;
  bool knows_membership = false;
};

}  // namespace

class AdminHttpServer::Handler : public CivetHandler {
 public:
  Handler(ReplicaLoop* loop, Metrics* metrics,
          std::function<size_t()> peer_queue_bytes)
      : loop_(loop),
        metrics_(metrics),
        peer_queue_bytes_(std::move(peer_queue_bytes)) {}

  bool handleGet(CivetServer* /*server*/, mg_connection* connection) override {
    const mg_request_info* request = mg_get_request_info(connection);
    const std::string uri = request->local_uri ? request->local_uri : "/";
    std::optional<View> view = TakeView();
    if (uri == "/healthz") {
      if (view.has_value()) {
        Reply(connection, 200, "text/plain", "ok\n");
      } else {
        Reply(connection, 503, "text/plain",
              "the replica's loop did not answer within 1s\n");
      }
    } else if (uri == "/readyz") {
      std::string why;
      const bool ready = view.has_value() && Ready(*view, &why);
      Reply(connection, ready ? 200 : 503, "text/plain", why + "\n");
    } else if (uri == "/metrics") {
      if (view.has_value()) metrics_->Update(view->sample, absl::Now());
      Reply(connection, 200, "text/plain; version=0.0.4",
            metrics_->Serialize());
    } else if (uri == "/") {
      if (!view.has_value()) {
        Reply(connection, 503, "text/plain",
              "the replica's loop did not answer within 1s\n");
      } else {
        metrics_->Update(view->sample, absl::Now());
        Reply(connection, 200, "text/html; charset=utf-8", Page(*view));
      }
    } else {
      Reply(connection, 404, "text/plain",
            "not found; try /, /metrics, /healthz or /readyz\n");
    }
    return true;
  }

 private:
  std::optional<View> TakeView() {
    auto view = std::make_shared<View>();
    auto done = std::make_shared<absl::Notification>();
    loop_->InspectNode([view, done](const ReplicaNode& node) {
      view->sample = Metrics::Take(node);
      view->membership = node.replica().membership();
      view->knows_membership = node.replica().knows_membership();
      for (const paxospb::Member& member : view->membership.members()) {
        view->peer_commits.emplace_back(member.id(),
                                        node.replica().PeerCommit(member.id()));
      }
      done->Notify();
    });
    if (!done->WaitForNotificationWithTimeout(kLoopTimeout)) {
      return std::nullopt;
    }
    view->sample.peer_queue_bytes = peer_queue_bytes_();
    return *view;
  }

  static bool Ready(const View& view, std::string* why) {
    const Metrics::Sample& s = view.sample;
    if (!view.knows_membership) {
      *why = "not ready: joining, the cell's configuration is not known yet";
      return false;
    }
    if (paxos::FindMember(view.membership, s.id) == nullptr) {
      *why = absl::StrCat("not ready: replica ", s.id,
                          " is not a member of the cell");
      return false;
    }
    if (s.role == paxos::Role::kLeader) {
      if (!s.has_lease) {
        *why = "not ready: leads but holds no lease yet";
        return false;
      }
      *why = "ready: leader";
      return true;
    }
    if (s.leader_id == 0) {
      *why = "not ready: no leader known";
      return false;
    }
    if (s.applied < s.commit) {
      *why = absl::StrCat("not ready: applied ", s.applied, " of ", s.commit);
      return false;
    }
    *why = absl::StrCat("ready: follows replica ", s.leader_id);
    return true;
  }

  std::string Page(const View& view) {
    const Metrics::Sample& s = view.sample;
    std::string html = absl::StrCat(
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<title>lockd replica ",
        s.id,
        "</title><style>body{font-family:sans-serif}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:2px 8px;text-align:left}</style></head><body>"
        "<h1>lockd replica ",
        s.id, "</h1><table id=\"replica\">");
    const auto row = [&html](const std::string& field,
                             const std::string& value) {
      absl::StrAppend(&html, "<tr><th>", Escape(field), "</th><td>",
                      Escape(value), "</td></tr>");
    };
    row("role", paxos::RoleName(s.role));
    row("leader", s.leader_id == 0 ? "unknown" : absl::StrCat(s.leader_id));
    row("epoch", paxos::EpochString(s.epoch));
    row("lease", s.has_lease ? "yes" : "no");
    row("commit index", absl::StrCat(s.commit));
    row("applied index", absl::StrCat(s.applied));
    row("snapshot index", absl::StrCat(s.snapshot_index));
    row("sessions", absl::StrCat(s.sessions));
    row("lock holders", absl::StrCat(s.locks.holders));
    row("lock waiters", absl::StrCat(s.locks.waiters));
    row("locks in lock-delay", absl::StrCat(s.locks.in_lock_delay));
    absl::StrAppend(&html,
                    "</table><h2>Members</h2><table id=\"members\"><tr>"
                    "<th>id</th><th>client address</th><th>peer address</th>"
                    "<th>role</th><th>acknowledged</th></tr>");
    for (size_t i = 0; i < static_cast<size_t>(view.membership.members_size());
         ++i) {
      const paxospb::Member& member = view.membership.members(i);
      std::string role = member.voter() ? "voter" : "learner";
      if (member.id() == s.leader_id) role += " (leader)";
      const std::string acknowledged =
          s.role == paxos::Role::kLeader
              ? absl::StrCat(view.peer_commits[i].second)
              : "-";
      absl::StrAppend(&html, "<tr><td>", member.id(), "</td><td>",
                      Escape(member.client_address()), "</td><td>",
                      Escape(member.peer_address()), "</td><td>", role,
                      "</td><td>", acknowledged, "</td></tr>");
    }
    absl::StrAppend(&html,
                    "</table><h2>Recent leaderships</h2>"
                    "<table id=\"leaderships\"><tr><th>seen (UTC)</th>"
                    "<th>epoch</th><th>leader</th></tr>");
    const std::vector<Metrics::Leadership> leaderships =
        metrics_->RecentLeaderships();
    for (auto it = leaderships.rbegin(); it != leaderships.rend(); ++it) {
      absl::StrAppend(&html, "<tr><td>",
                      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", it->seen,
                                       absl::UTCTimeZone()),
                      "</td><td>", paxos::EpochString(it->epoch), "</td><td>",
                      it->leader_id, "</td></tr>");
    }
    absl::StrAppend(&html,
                    "</table><p><a href=\"/metrics\">metrics</a> · "
                    "<a href=\"/healthz\">healthz</a> · "
                    "<a href=\"/readyz\">readyz</a></p></body></html>\n");
    return html;
  }

  ReplicaLoop* const loop_;
  Metrics* const metrics_;
  const std::function<size_t()> peer_queue_bytes_;
};

absl::StatusOr<std::unique_ptr<AdminHttpServer>> AdminHttpServer::Start(
    const std::string& address, ReplicaLoop* loop, Metrics* metrics,
    std::function<size_t()> peer_queue_bytes) {
  std::unique_ptr<AdminHttpServer> server(new AdminHttpServer());
  server->handler_ =
      std::make_unique<Handler>(loop, metrics, std::move(peer_queue_bytes));
  const std::vector<std::string> options = {"listening_ports", address,
                                            "num_threads", "2"};
  // civetweb reports a failed bind by throwing; nothing else here throws.
  try {
    server->server_ = std::make_unique<CivetServer>(options);
  } catch (const CivetException& error) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, " (", error.what(),
                     "); give --metrics_address as host:port, free"));
  }
  server->server_->addHandler("/", server->handler_.get());
  const std::vector<int> ports = server->server_->getListeningPorts();
  server->port_ = ports.empty() ? 0 : ports.front();
  return server;
}

AdminHttpServer::~AdminHttpServer() {
  if (server_ != nullptr) server_->close();
}

}  // namespace lockd
