// lockd_elect_example: leader election with the client library.
//
// Every instance campaigns for the election --name with its --id as value.
// The winner prints
//   leader: <id> (generation N)
// and then serves: it prints a "serving" line every second for as long as
// Election::IsLeader() holds (a real service would pass the sequencer or
// the generation to whatever it writes, so that a deposed leader's writes
// are refused). The others wait in FIFO order and print every leader change
// they observe:
//   observed: leader <id> (generation N)
//   observed: no leader
// When leadership is lost (the session left the healthy state) the
// instance gives its session up and campaigns again with a new one. SIGINT
// or SIGTERM resigns, closes the session (the next candidate wins at once)
// and exits with status 0.
//
// Three terminals against `./dev cell`:
//   build/bin/lockd_elect_example --id=a
//   build/bin/lockd_elect_example --id=b
//   build/bin/lockd_elect_example --id=c
// Ctrl-C the leader (hand-over at once) or kill -9 it (hand-over after the
// session's TTL, --ttl).

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "lockd/client.h"
#include "lockd/election.h"
#include "lockd/session.h"

ABSL_FLAG(std::string, endpoints,
          "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
          "Replica addresses of the cell, comma separated.");
ABSL_FLAG(std::string, ca, "",
          "PEM file of the cell's CA for TLS (default: $LOCKD_CA; none: "
          "plaintext).");
ABSL_FLAG(std::string, cert, "",
          "PEM file of a client certificate, with --key (default: "
          "$LOCKD_CERT).");
ABSL_FLAG(std::string, key, "",
          "PEM file of --cert's key (default: $LOCKD_KEY).");
ABSL_FLAG(std::string, name, "example", "The election's name.");
ABSL_FLAG(std::string, id, "",
          "This candidate's value (what observers see as the leader). "
          "Default: hostname:pid.");
ABSL_FLAG(absl::Duration, ttl, absl::Seconds(10),
          "Session TTL: how long after a crash of the leader the next "
          "candidate wins.");

namespace lockd {
namespace {

std::string DefaultId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "localhost", ":", getpid());
}

// One line on stdout (line buffered, so that a pipe sees it at once).
template <typename... Args>
void Print(const Args&... args) {
  std::printf("%s\n", absl::StrCat(args...).c_str());
  std::fflush(stdout);
}

std::string Describe(const v1::LeaderInfo& leader) {
  if (leader.session_id() == 0) return "no leader";
  return absl::StrCat("leader ", leader.value(), " (generation ",
                      leader.lock_generation(), ")");
}

class Candidate {
 public:
  Candidate(Client* client, std::string name, std::string id,
            absl::Duration ttl)
      : client_(client),
        name_(std::move(name)),
        id_(std::move(id)),
        ttl_(ttl) {}

  // Campaigns, serves and campaigns again until Stop(). Returns the exit
  // status.
  int Run() {
    absl::StatusOr<std::unique_ptr<ElectionObserver>> observer =
        ElectionObserver::Start(client_, name_);
    if (!observer.ok()) {
      LOG(ERROR) << "observe: " << observer.status();
      return 1;
    }
    std::thread printer([this, o = observer->get()] { PrintChanges(o); });
    while (!stop_.HasBeenNotified()) RunOneSession();
    (*observer)->Cancel();
    printer.join();
    return 0;
  }

  // From the signal thread: ends Run() (a parked campaign is ended by
  // closing its session).
  void Stop() {
    absl::MutexLock lock(&mu_);
    if (stop_.HasBeenNotified()) return;
    stop_.Notify();
    if (session_ != nullptr && !leading_.load()) {
      const absl::Status closed = session_->Close();
      if (!closed.ok()) LOG(WARNING) << "close: " << closed;
    }
  }

 private:
  // One session: campaign until elected, serve while leader, give up.
  void RunOneSession() {
    SessionOptions options;
    options.ttl = ttl_;
    options.client_name = absl::StrCat("lockd_elect_example ", id_);
    absl::StatusOr<std::unique_ptr<Session>> created =
        Session::Create(client_, options);
    if (!created.ok()) {
      LOG(WARNING) << "session: " << created.status();
      stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (stop_.HasBeenNotified()) {
        const absl::Status closed = (*created)->Close();
        if (!closed.ok()) LOG(WARNING) << "close: " << closed;
        return;
      }
      session_ = std::move(*created);
      session_id_.store(session_->id());
    }
    Session* session = session_.get();
    std::unique_ptr<Election> election;
    while (!stop_.HasBeenNotified() &&
           session->state() != SessionState::kExpired &&
           session->state() != SessionState::kClosed) {
      absl::StatusOr<std::unique_ptr<Election>> won =
          Election::Campaign(session, name_, id_, absl::Hours(1));
      if (won.ok()) {
        election = std::move(*won);
        break;
      }
      if (stop_.HasBeenNotified()) break;
      if (won.status().code() != absl::StatusCode::kDeadlineExceeded) {
        LOG(WARNING) << "campaign: " << won.status();
        stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
      }
    }
    if (election != nullptr) Serve(*election);
    // Give the session up: resign (if still possible), then close it.
    absl::MutexLock lock(&mu_);
    leading_.store(false);
    election.reset();
    const SessionState state = session->state();
    if (state != SessionState::kExpired && state != SessionState::kClosed) {
      const absl::Status closed = session->Close();
      if (!closed.ok()) LOG(WARNING) << "close: " << closed;
    }
    session_id_.store(0);
    session_.reset();
  }

  void Serve(Election& election) {
    if (stop_.HasBeenNotified()) return;  // Won just as Stop() came.
    leading_.store(true);
    const v1::LeaderInfo leader = election.leader();
    Print("leader: ", leader.value(), " (generation ", leader.lock_generation(),
          ")");
    while (election.IsLeader()) {
      if (stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
        const absl::Status resigned = election.Resign();
        if (resigned.ok()) {
          Print("resigned: ", id_);
        } else {
          LOG(WARNING) << "resign: " << resigned;
        }
        return;
      }
      if (!election.IsLeader()) break;
      Print("serving: ", leader.value(), " (generation ",
            leader.lock_generation(), ", session lease ",
            absl::FormatDuration(
                absl::Trunc(election.session()->LocalLeaseRemaining(),
                            absl::Milliseconds(1))),
            ")");
    }
    Print("lost leadership: session ",
          SessionStateName(election.session()->state()));
  }

  // Prints every leader change seen while this candidate does not lead.
  void PrintChanges(ElectionObserver* observer) {
    while (true) {
      absl::StatusOr<v1::LeaderInfo> next =
          observer->Next(absl::InfiniteDuration());
      if (!next.ok()) {
        if (next.status().code() != absl::StatusCode::kCancelled) {
          LOG(ERROR) << "observe: " << next.status();
        }
        return;
      }
      if (leading_.load() || stop_.HasBeenNotified()) continue;
      if (next->session_id() != 0 && next->session_id() == session_id_.load()) {
        continue;  // Our own win: Serve() says so.
      }
      Print("observed: ", Describe(*next));
    }
  }

  Client* const client_;
  const std::string name_;
  const std::string id_;
  const absl::Duration ttl_;

  absl::Notification stop_;
  std::atomic<bool> leading_{false};
  std::atomic<uint64_t> session_id_{0};
  // Guards replacing and closing the session (Run() and Stop()).
  absl::Mutex mu_;
  std::unique_ptr<Session> session_;
};

}  // namespace
}  // namespace lockd

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Leader election with lockd: campaigns, serves while leader, prints "
      "the leader changes it observes.\n"
      "  lockd_elect_example --endpoints=127.0.0.1:7001,127.0.0.1:7002,"
      "127.0.0.1:7003 --name=example --id=a");
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  // SIGINT and SIGTERM are taken by a thread of their own (blocked here
  // before any other thread starts, so every thread inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  lockd::ClientOptions options;
  std::vector<std::string> endpoints = absl::StrSplit(
      absl::GetFlag(FLAGS_endpoints), ',', absl::SkipWhitespace());
  options.endpoints = std::move(endpoints);
  options.tls_ca_file = absl::GetFlag(FLAGS_ca);
  options.tls_cert_file = absl::GetFlag(FLAGS_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_key);
  absl::StatusOr<std::unique_ptr<lockd::Client>> client =
      lockd::Client::Create(options);
  if (!client.ok()) {
    LOG(ERROR) << client.status();
    return 1;
  }
  std::string id = absl::GetFlag(FLAGS_id);
  if (id.empty()) id = lockd::DefaultId();
  const absl::Duration ttl = absl::GetFlag(FLAGS_ttl);
  if (ttl < absl::Seconds(1)) {
    LOG(ERROR) << "--ttl must be at least 1s";
    return 1;
  }
  lockd::Candidate candidate(client->get(), absl::GetFlag(FLAGS_name), id, ttl);
  std::thread signal_thread([&candidate, signals] {
    int signal = 0;
    sigwait(&signals, &signal);
    candidate.Stop();
  });
  const int status = candidate.Run();
  if (status != 0) {
    // The signal thread still waits: leave without running destructors.
    signal_thread.detach();
    std::exit(status);
  }
  // Run() returns 0 only after Stop(), that is after a signal.
  signal_thread.join();
  return 0;
}
