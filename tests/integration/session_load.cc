#include "tests/integration/session_load.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "protos/lockd.grpc.pb.h"
#include "tests/integration/cell.h"

namespace lockd::integration {
namespace {

constexpr char kLeaderAddressKey[] = "lockd-leader-address";

std::string LeaderFromTrailers(const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(kLeaderAddressKey);
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    default:
      return absl::StrCat("code ", static_cast<int>(code));
  }
}

// Runs closures at their due time on one thread (to within a few ms).
class Timer {
 public:
  Timer() : thread_([this] { Run(); }) {}
  ~Timer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  void After(absl::Duration delay, std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    tasks_.emplace(std::make_pair(absl::Now() + delay, next_order_++),
                   std::move(task));
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        while (!stop_ &&
               (tasks_.empty() || tasks_.begin()->first.first > absl::Now())) {
          mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Milliseconds(5));
        }
        if (stop_) return;
        task = std::move(tasks_.begin()->second);
        tasks_.erase(tasks_.begin());
      }
      task();
    }
  }

  absl::Mutex mu_;
  // By (due time, order of arrival).
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> tasks_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<ProcessSample> SampleProcess(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) {
    return absl::NotFoundError(absl::StrCat("no process ", pid));
  }
  // Fields after the command name (which may hold spaces) start at ") ".
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  ProcessSample sample;
  sample.cpu_seconds = static_cast<double>(utime + stime) /
                       static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      sample.rss_kb = std::stoll(line.substr(6));
    }
  }
  return sample;
}

class SessionLoad::Impl {
 public:
  explicit Impl(SessionLoadOptions options)
      : options_(std::move(options)),
        sessions_(static_cast<size_t>(std::max(0, options_.sessions))) {
    const int per_connection = std::max(1, options_.sessions_per_connection);
    connections_.resize((sessions_.size() + per_connection - 1) /
                        per_connection);
    for (auto& connection : connections_) {
      connection = std::make_unique<Connection>();
    }
    absl::BitGen random;
    for (size_t i = 0; i < sessions_.size(); ++i) {
      sessions_[i].index = static_cast<int>(i);
      sessions_[i].nonce = absl::Uniform<uint64_t>(random, 1, UINT64_MAX);
      sessions_[i].connection = connections_[i / per_connection].get();
      sessions_[i].request.set_ttl_ms(absl::ToInt64Milliseconds(options_.ttl));
      sessions_[i].request.set_client_name(
          absl::StrCat(options_.client_name, " #", i));
      sessions_[i].request.set_nonce(sessions_[i].nonce);
    }
    for (const std::string& endpoint : options_.endpoints) {
      monitor_stubs_.push_back(v1::Cluster::NewStub(NewChannel(endpoint)));
    }
  }

  ~Impl() { Shutdown(); }

  absl::Status Open() {
    const bool found = PollUntil(
        [&] {
          PollStatus();
          return !leader().empty();
        },
        absl::Seconds(30), absl::Milliseconds(50));
    if (!found) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no endpoint of ", absl::StrJoin(options_.endpoints, ","),
          " names a leader"));
    }
    if (options_.spread) {
      for (size_t i = 0; i < connections_.size(); ++i) {
        absl::MutexLock lock(&connections_[i]->mu);
        connections_[i]->target =
            options_.endpoints[i % options_.endpoints.size()];
      }
    }
    monitor_ = std::thread([this] { MonitorLoop(); });
    const absl::Time start = absl::Now();
    const int concurrency =
        std::min<int>(options_.open_concurrency, sessions_.size());
    for (int i = 0; i < concurrency; ++i) StartNextOpen();
    {
      absl::MutexLock lock(&mu_);
      auto all_done = [this] {
        mu_.AssertHeld();
        return opens_done_ == static_cast<int>(sessions_.size());
      };
      mu_.Await(absl::Condition(&all_done));
      report_.open_time = absl::Now() - start;
    }
    return absl::OkStatus();
  }

  void Hold(absl::Duration duration) {
    absl::SleepFor(duration);
    const int64_t now_ns = absl::GetCurrentTimeNanos();
    for (Session& session : sessions_) {
      if (session.id == 0 || session.lost.load()) continue;
      NoteGap(now_ns - session.last_answer_ns.load());
    }
  }

  // The other sessions stay alive while some close (closing 100,000 takes
  // a while).
  int Close() {
    for (Session& session : sessions_) {
      if (session.id != 0 && !session.lost.load()) closing_.push_back(&session);
    }
    const int concurrency =
        std::min<int>(options_.open_concurrency, closing_.size());
    for (int i = 0; i < concurrency; ++i) StartNextClose();
    {
      absl::MutexLock lock(&mu_);
      auto all_done = [this] {
        mu_.AssertHeld();
        return closes_done_ == static_cast<int>(closing_.size());
      };
      mu_.Await(absl::Condition(&all_done));
    }
    Shutdown();
    absl::MutexLock lock(&mu_);
    return closes_failed_;
  }

  SessionLoadReport report() const {
    absl::MutexLock lock(&mu_);
    SessionLoadReport report = report_;
    report.sessions_tried = static_cast<int>(sessions_.size());
    report.keep_alives_sent = keep_alives_sent_.load();
    report.keep_alive_answers = keep_alive_answers_.load();
    report.stream_restarts = stream_restarts_.load();
    report.max_answer_gap = absl::Nanoseconds(max_gap_ns_.load());
    int lost = 0;
    for (const Session& session : sessions_) lost += session.lost.load();
    report.sessions_lost = lost;
    return report;
  }

 private:
  class Stream;

  // What one client process would hold: a channel per address it has
  // talked to (each its own TCP connection), shared by its sessions, and the
  // address it currently sends to.
  struct Session;

  struct Connection {
    absl::Mutex mu;
    std::string target ABSL_GUARDED_BY(mu);
    std::map<std::string, std::unique_ptr<v1::Sessions::Stub>> stubs
        ABSL_GUARDED_BY(mu);
    // With batch_streams: the connection's open sessions, kept alive
    // together on one stream in the batch form.
    absl::Mutex batch_mu;
    std::map<uint64_t, Session*> open ABSL_GUARDED_BY(batch_mu);
    Stream* stream ABSL_GUARDED_BY(batch_mu) = nullptr;
    bool pinging ABSL_GUARDED_BY(batch_mu) = false;
  };

  struct Session {
    int index = 0;
    uint64_t nonce = 0;
    Connection* connection = nullptr;
    // Written once by the open callback, before the stream starts.
    uint64_t id = 0;
    absl::Time open_started;
    // The context of the CreateSession (later CloseSession) call in flight.
    std::unique_ptr<grpc::ClientContext> open_context;
    v1::CreateSessionRequest request;
    v1::CreateSessionResponse response;
    v1::CloseSessionRequest close_request;
    v1::CloseSessionResponse close_response;
    int close_attempts = 0;
    std::atomic<bool> lost{false};
    // Set before its CloseSession is sent: the stream's end is expected.
    std::atomic<bool> closed{false};
    std::atomic<int64_t> last_answer_ns{0};
    absl::Mutex mu;
    Stream* stream ABSL_GUARDED_BY(mu) = nullptr;
  };

  // One KeepAlive stream: of one session (single form), or of all the
  // sessions of a connection (batch form). A hold keeps the reactor alive
  // until its read side ends, so Ping() never writes to a finished call.
  class Stream : public grpc::ClientBidiReactor<v1::KeepAliveRequest,
                                                v1::KeepAliveResponse> {
   public:
    // Exactly one of `session` (single form) and `connection` (batch form).
    Stream(Impl* load, Session* session, Connection* connection,
           v1::Sessions::Stub* stub)
        : load_(load), session_(session), connection_(connection) {
      stub->async()->KeepAlive(&context_, this);
      AddHold();
      StartRead(&response_);
      StartCall();
    }

    // Renews the stream's session, or `batch` in the batch form, unless a
    // write is in flight or the stream ended.
    void Ping(const std::vector<const Session*>& batch = {}) {
      absl::MutexLock lock(&mu_);
      if (ended_ || writing_ || (session_ == nullptr && batch.empty())) return;
      writing_ = true;
      request_.Clear();
      if (session_ != nullptr) {
        request_.set_session_id(session_->id);
        request_.set_session_secret(session_->response.session_secret());
        load_->keep_alives_sent_.fetch_add(1);
      } else {
        for (const Session* session : batch) {
          v1::KeepAliveRequest* entry = request_.add_sessions();
          entry->set_session_id(session->id);
          entry->set_session_secret(session->response.session_secret());
        }
        load_->keep_alives_sent_.fetch_add(batch.size());
      }
      StartWrite(&request_);
    }

    void Cancel() { context_.TryCancel(); }

    void OnWriteDone(bool /*ok*/) override {
      absl::MutexLock lock(&mu_);
      writing_ = false;
    }

    void OnReadDone(bool ok) override {
      if (ok) {
        if (session_ != nullptr) {
          load_->Answered(*session_, response_);
        } else {
          load_->BatchAnswered(*connection_, response_);
        }
        StartRead(&response_);
        return;
      }
      {
        absl::MutexLock lock(&mu_);
        ended_ = true;
      }
      RemoveHold();
    }

    void OnDone(const grpc::Status& status) override {
      if (session_ != nullptr) {
        load_->StreamDone(*session_, status, LeaderFromTrailers(context_));
      } else {
        load_->BatchStreamDone(*connection_, LeaderFromTrailers(context_));
      }
      delete this;
    }

   private:
    Impl* const load_;
    Session* const session_;
    Connection* const connection_;
    grpc::ClientContext context_;
    v1::KeepAliveRequest request_;
    v1::KeepAliveResponse response_;
    absl::Mutex mu_;
    bool ended_ ABSL_GUARDED_BY(mu_) = false;
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
  };

  // The ids of the connection's sessions to renew.
  static std::vector<const Session*> OpenSessions(Connection& connection)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(connection.batch_mu) {
    std::vector<const Session*> open;
    for (const auto& [id, session] : connection.open) {
      if (!session->lost.load() && !session->closed.load()) {
        open.push_back(session);
      }
    }
    return open;
  }

  // A session opened on a batch connection: the stream and its pings start
  // with the first.
  void JoinBatch(Session& session) {
    Connection& connection = *session.connection;
    bool start_pinging = false;
    {
      absl::MutexLock lock(&connection.batch_mu);
      connection.open[session.id] = &session;
      if (!connection.pinging) connection.pinging = start_pinging = true;
    }
    if (start_pinging) {
      StartBatchStream(connection);
      ScheduleBatchPing(connection);
    }
  }

  void StartBatchStream(Connection& connection) {
    v1::Sessions::Stub* stub = StubFor(connection);
    absl::MutexLock lock(&connection.batch_mu);
    if (stopping_.load() || connection.stream != nullptr) return;
    {
      absl::MutexLock count_lock(&mu_);
      ++live_streams_;
    }
    connection.stream = new Stream(this, nullptr, &connection, stub);
    connection.stream->Ping(OpenSessions(connection));
  }

  void ScheduleBatchPing(Connection& connection) {
    timer_.After(options_.ttl / 3, [this, &connection] {
      if (stopping_.load()) return;
      {
        absl::MutexLock lock(&connection.batch_mu);
        if (connection.stream != nullptr) {
          connection.stream->Ping(OpenSessions(connection));
        }
      }
      ScheduleBatchPing(connection);
    });
  }

  void BatchAnswered(Connection& connection,
                     const v1::KeepAliveResponse& response) {
    for (const v1::KeepAliveResponse& entry : response.sessions()) {
      Session* session = nullptr;
      {
        absl::MutexLock lock(&connection.batch_mu);
        auto it = connection.open.find(entry.session_id());
        if (it != connection.open.end()) session = it->second;
      }
      if (session == nullptr || session->closed.load()) continue;
      if (entry.code() != 0) {
        session->lost.store(true);
        continue;
      }
      Answered(*session, entry);
    }
  }

  void BatchStreamDone(Connection& connection,
                       const std::string& leader_address) {
    {
      absl::MutexLock lock(&connection.batch_mu);
      connection.stream = nullptr;
    }
    if (!stopping_.load()) {
      stream_restarts_.fetch_add(1);
      Redirect(connection, leader_address);
      timer_.After(absl::Milliseconds(20),
                   [this, &connection] { StartBatchStream(connection); });
    }
    absl::MutexLock lock(&mu_);
    --live_streams_;
  }

  std::string leader() const {
    absl::MutexLock lock(&leader_mu_);
    return leader_;
  }
  void SetLeader(const std::string& address) {
    if (address.empty()) return;
    absl::MutexLock lock(&leader_mu_);
    leader_ = address;
  }

  // The stub for the connection's current target.
  v1::Sessions::Stub* StubFor(Connection& connection) {
    absl::MutexLock lock(&connection.mu);
    if (connection.target.empty()) connection.target = leader();
    std::unique_ptr<v1::Sessions::Stub>& stub =
        connection.stubs[connection.target];
    if (stub == nullptr) {
      stub = v1::Sessions::NewStub(NewChannel(connection.target));
    }
    return stub.get();
  }

  // After a failed call: follow the leader named in the trailers, or else
  // the leader the monitor knows of (as the client library does).
  void Redirect(Connection& connection, const std::string& hint) {
    const std::string next = hint.empty() ? leader() : hint;
    absl::MutexLock lock(&connection.mu);
    connection.target = next;
  }

  void StartNextOpen() {
    const int i = next_open_.fetch_add(1);
    if (i >= static_cast<int>(sessions_.size())) return;
    sessions_[i].open_started = absl::Now();
    AttemptOpen(sessions_[i]);
  }

  void AttemptOpen(Session& session) {
    if (stopping_.load()) {
      FinishOpen(false);
      return;
    }
    session.open_context = std::make_unique<grpc::ClientContext>();
    session.open_context->set_deadline(
        absl::ToChronoTime(absl::Now() + options_.call_timeout));
    StubFor(*session.connection)
        ->async()
        ->CreateSession(session.open_context.get(), &session.request,
                        &session.response,
                        [this, &session](grpc::Status status) {
                          OpenDone(session, status);
                        });
  }

  void OpenDone(Session& session, const grpc::Status& status) {
    if (status.ok()) {
      session.id = session.response.session_id();
      session.last_answer_ns.store(absl::GetCurrentTimeNanos());
      if (options_.batch_streams) {
        JoinBatch(session);
      } else {
        StartStream(session);
        SchedulePing(session);
      }
      FinishOpen(true);
      return;
    }
    Redirect(*session.connection, LeaderFromTrailers(*session.open_context));
    {
      absl::MutexLock lock(&mu_);
      ++report_.failed_open_attempts[CodeName(status.error_code())];
    }
    if (absl::Now() - session.open_started > options_.open_timeout) {
      FinishOpen(false);
      return;
    }
    const absl::Duration backoff =
        status.error_code() == grpc::StatusCode::UNAVAILABLE
            ? absl::Milliseconds(20)
            : absl::Milliseconds(100);
    timer_.After(backoff, [this, &session] { AttemptOpen(session); });
  }

  // Starts the next open first: once the count is complete, Open() returns
  // and nothing of this call may run any more.
  void FinishOpen(bool opened) {
    StartNextOpen();
    absl::MutexLock lock(&mu_);
    ++opens_done_;
    if (opened) {
      ++report_.sessions_opened;
    } else {
      ++report_.sessions_not_opened;
    }
  }

  void StartNextClose() {
    const size_t i = next_close_.fetch_add(1);
    if (i >= closing_.size()) return;
    closing_[i]->closed.store(true);
    RetryClose(*closing_[i]);
  }

  void RetryClose(Session& session) {
    session.open_context = std::make_unique<grpc::ClientContext>();
    session.open_context->set_deadline(
        absl::ToChronoTime(absl::Now() + options_.call_timeout));
    session.close_request.mutable_header()->set_session_id(session.id);
    session.close_request.mutable_header()->set_session_secret(
        session.response.session_secret());
    session.close_request.mutable_header()->set_request_id(1);
    StubFor(*session.connection)
        ->async()
        ->CloseSession(session.open_context.get(), &session.close_request,
                       &session.close_response,
                       [this, &session](grpc::Status status) {
                         CloseDone(session, status);
                       });
  }

  // A close redirected by a follower or overtaken by a leader change is
  // retried (the same request number: the cell closes the session once).
  void CloseDone(Session& session, const grpc::Status& status) {
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
        ++session.close_attempts < 5) {
      Redirect(*session.connection, LeaderFromTrailers(*session.open_context));
      timer_.After(absl::Milliseconds(20),
                   [this, &session] { RetryClose(session); });
      return;
    }
    StartNextClose();
    absl::MutexLock lock(&mu_);
    ++closes_done_;
    if (!status.ok()) {
      ++closes_failed_;
      ++report_.failed_closes[CodeName(status.error_code())];
    }
  }

  // Under the session's mutex, so that Shutdown() either sees the stream or
  // this sees stopping_.
  void StartStream(Session& session) {
    absl::MutexLock lock(&session.mu);
    if (stopping_.load() || session.closed.load()) return;
    {
      absl::MutexLock count_lock(&mu_);
      ++live_streams_;
    }
    session.stream =
        new Stream(this, &session, nullptr, StubFor(*session.connection));
    session.stream->Ping();
  }

  // Every TTL/3 from the session's open on, as the client library does.
  void SchedulePing(Session& session) {
    timer_.After(options_.ttl / 3, [this, &session] {
      if (stopping_.load() || session.lost.load() || session.closed.load()) {
        return;
      }
      {
        absl::MutexLock lock(&session.mu);
        if (session.stream != nullptr) session.stream->Ping();
      }
      SchedulePing(session);
    });
  }

  void Answered(Session& session, const v1::KeepAliveResponse& response) {
    keep_alive_answers_.fetch_add(1);
    const int64_t now_ns = absl::GetCurrentTimeNanos();
    NoteGap(now_ns - session.last_answer_ns.exchange(now_ns));
    if (response.lease_remaining_ms() <= 0) session.lost.store(true);
  }

  void NoteGap(int64_t gap_ns) {
    int64_t seen = max_gap_ns_.load();
    while (gap_ns > seen && !max_gap_ns_.compare_exchange_weak(seen, gap_ns)) {
    }
  }

  void StreamDone(Session& session, const grpc::Status& status,
                  const std::string& leader_address) {
    {
      absl::MutexLock lock(&session.mu);
      session.stream = nullptr;
    }
    const bool ended_by_cell =
        status.error_code() == grpc::StatusCode::NOT_FOUND ||
        status.error_code() == grpc::StatusCode::FAILED_PRECONDITION;
    if (!stopping_.load() && !session.closed.load()) {
      if (ended_by_cell) {
        session.lost.store(true);
      } else {
        stream_restarts_.fetch_add(1);
        Redirect(*session.connection, leader_address);
        timer_.After(absl::Milliseconds(20),
                     [this, &session] { StartStream(session); });
      }
    }
    absl::MutexLock lock(&mu_);
    --live_streams_;
  }

  // Asks every endpoint for its view; follows the leader and counts new
  // leaderships.
  void PollStatus() {
    for (size_t i = 0; i < monitor_stubs_.size(); ++i) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      v1::StatusResponse status;
      if (!monitor_stubs_[i]
               ->Status(&context, v1::StatusRequest(), &status)
               .ok()) {
        if (monitor_started_) {
          absl::MutexLock lock(&mu_);
          ++report_.status_timeouts;
        }
        continue;
      }
      if (status.role() == "leader" && status.has_lease()) {
        SetLeader(options_.endpoints[i]);
      }
      absl::MutexLock lock(&mu_);
      if (status.epoch() > max_epoch_) {
        if (monitor_started_) {
          ++report_.leader_changes;
          report_.leaderships.push_back(absl::StrFormat(
              "epoch %d: replica %d after %.1f s", status.epoch(),
              status.leader_id(),
              absl::ToDoubleSeconds(absl::Now() - monitor_start_)));
        }
        max_epoch_ = status.epoch();
      }
    }
  }

  void MonitorLoop() {
    monitor_start_ = absl::Now();
    monitor_started_ = true;
    while (!monitor_stop_.load()) {
      PollStatus();
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  void Shutdown() {
    if (shut_down_) return;
    shut_down_ = true;
    stopping_.store(true);
    for (Session& session : sessions_) {
      absl::MutexLock lock(&session.mu);
      if (session.stream != nullptr) session.stream->Cancel();
    }
    for (auto& connection : connections_) {
      absl::MutexLock lock(&connection->batch_mu);
      if (connection->stream != nullptr) connection->stream->Cancel();
    }
    {
      absl::MutexLock lock(&mu_);
      auto none = [this] {
        mu_.AssertHeld();
        return live_streams_ == 0;
      };
      mu_.Await(absl::Condition(&none));
    }
    monitor_stop_.store(true);
    if (monitor_.joinable()) monitor_.join();
  }

  const SessionLoadOptions options_;
  std::vector<Session> sessions_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<std::unique_ptr<v1::Cluster::Stub>> monitor_stubs_;
  // Declared after the sessions so that its tasks never outlive them.
  Timer timer_;

  mutable absl::Mutex leader_mu_;
  std::string leader_ ABSL_GUARDED_BY(leader_mu_);

  std::atomic<int> next_open_{0};
  std::vector<Session*> closing_;
  std::atomic<size_t> next_close_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> keep_alives_sent_{0};
  std::atomic<uint64_t> keep_alive_answers_{0};
  std::atomic<uint64_t> stream_restarts_{0};
  std::atomic<int64_t> max_gap_ns_{0};

  mutable absl::Mutex mu_;
  SessionLoadReport report_ ABSL_GUARDED_BY(mu_);
  int opens_done_ ABSL_GUARDED_BY(mu_) = 0;
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int closes_done_ ABSL_GUARDED_BY(mu_) = 0;
  int closes_failed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t max_epoch_ ABSL_GUARDED_BY(mu_) = 0;

  // The monitor thread (and Open() before it starts).
  std::thread monitor_;
  std::atomic<bool> monitor_stop_{false};
  std::atomic<bool> monitor_started_{false};
  absl::Time monitor_start_;
  bool shut_down_ = false;
};

SessionLoad::SessionLoad(SessionLoadOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
SessionLoad::~SessionLoad() = default;
absl::Status SessionLoad::Open() { return impl_->Open(); }
void SessionLoad::Hold(absl::Duration duration) { impl_->Hold(duration); }
int SessionLoad::Close() { return impl_->Close(); }
SessionLoadReport SessionLoad::report() const { return impl_->report(); }

}  // namespace lockd::integration
