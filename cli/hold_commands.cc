// lockctl lock, elect, leader, observe and check-sequencer.

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/context.h"
#include "cli/supervisor.h"
#include "lockd/election.h"
#include "lockd/lock.h"
#include "lockd/sequencer.h"

namespace lockd::cli {
namespace {

// The longest wait the cell accepts in one request; longer waits repeat.
constexpr absl::Duration kMaxWaitPerRequest = absl::Hours(1);
// Covers lockctl noticing (it polls every 20 ms) and the kernel delivering
// SIGKILL, with room to spare.
constexpr absl::Duration kStopSlack = absl::Milliseconds(200);
// The cell's clock may run this much fast (docs/server.md, "Time").
constexpr double kCellClockRate = 1.05;
// Limits of the cell (docs/sessions.md).
constexpr absl::Duration kMinTtl = absl::Seconds(1);
constexpr absl::Duration kMaxTtl = absl::Hours(1);
constexpr absl::Duration kMaxLockDelay = absl::Seconds(60);
// How long lockctl waits for the session to close before it exits after an
// interruption or a loss.
constexpr absl::Duration kCloseOnInterrupt = absl::Seconds(2);

// The session and timing settings of lock and elect.
struct HoldSettings {
  absl::Duration ttl;
  absl::Duration lock_delay;
  absl::Duration kill_grace;
  // Unset: wait until interrupted.
  std::optional<absl::Duration> wait;
  // When, relative to the end of the local lease, CMD must begin to stop
  // (docs/lockctl.md, "Why two commands never run at once"). Negative for
  // shared locks, whose holders' expiry imposes no lock-delay.
  absl::Duration stop_offset;
};

absl::StatusOr<HoldSettings> ParseHoldSettings(const ParsedArgs& args,
                                               bool shared) {
  HoldSettings settings;
  absl::StatusOr<absl::Duration> ttl = args.Duration("ttl", absl::Seconds(10));
  if (!ttl.ok()) return ttl.status();
  absl::StatusOr<absl::Duration> lock_delay =
      args.Duration("lock-delay", absl::Seconds(10));
  if (!lock_delay.ok()) return lock_delay.status();
  absl::StatusOr<absl::Duration> kill_grace =
      args.Duration("kill-grace", absl::Seconds(3));
  if (!kill_grace.ok()) return kill_grace.status();
  settings.ttl = *ttl;
  settings.lock_delay = *lock_delay;
  settings.kill_grace = *kill_grace;
  if (settings.ttl < kMinTtl || settings.ttl > kMaxTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ttl=", absl::FormatDuration(settings.ttl),
                     " is outside the cell's range [1s, 1h]"));
  }
  if (settings.lock_delay > kMaxLockDelay) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lock-delay=", absl::FormatDuration(settings.lock_delay),
                     " is above the cell's maximum of 60s"));
  }
  if (args.Has("wait")) {
    absl::StatusOr<absl::Duration> wait = args.Duration("wait", {});
    if (!wait.ok()) return wait.status();
    settings.wait = *wait;
  }
  // Nobody can hold the lock before the session's expiry plus the
  // lock-delay (measured in cell time, which may run 5% fast); the expiry
  // comes no earlier than the end of the local lease. The command is dead
  // kill_grace + kStopSlack after it begins to stop.
  const absl::Duration protection =
      shared ? absl::ZeroDuration() : settings.lock_delay / kCellClockRate;
  settings.stop_offset = protection - settings.kill_grace - kStopSlack;
  // A negative offset stops the command while the lease still runs; the
  // lease left never drops below about half the TTL while keep-alives are
  // answered, so more than that would stop healthy holds.
  if (-settings.stop_offset > settings.ttl / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kill-grace=", absl::FormatDuration(settings.kill_grace),
        " does not fit: the command must be stopped ",
        absl::FormatDuration(-settings.stop_offset),
        " before the session's lease ends, more than half of --ttl=",
        absl::FormatDuration(settings.ttl), "; use a shorter --kill-grace, ",
        shared ? "or a longer --ttl" : "a longer --lock-delay or --ttl"));
  }
  return settings;
}

// Runs `last_words` (e.g. closing the session) for at most
// kCloseOnInterrupt, or until a terminating signal, and exits with `code`
// without unwinding: threads may still be inside gRPC calls.
[[noreturn]] void ExitAfter(std::function<void()> last_words, int code) {
  if (last_words) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread([last_words, done] {
      last_words();
      *done = true;
    }).detach();
    const absl::Time deadline = absl::Now() + kCloseOnInterrupt;
    WaitInterruptibly([&] { return *done || absl::Now() >= deadline; });
  }
  std::fflush(nullptr);
  _exit(code);
}

// Runs `call` on a thread while lockctl waits for signals. On SIGINT,
// SIGTERM, SIGHUP or SIGQUIT lockctl reports the interruption, runs
// `on_interrupt` (e.g. closes the session, which ends a parked acquire) for
// at most kCloseOnInterrupt, and exits 128+signal.
template <typename T>
absl::StatusOr<T> Interruptible(const Context& context,
                                std::function<absl::StatusOr<T>()> call,
                                std::function<void()> on_interrupt) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto result =
      std::make_shared<absl::StatusOr<T>>(absl::UnknownError("not run"));
  std::thread thread([call, done, result] {
    *result = call();
    *done = true;
  });
  const int signal = WaitInterruptibly([&] { return done->load(); });
  if (signal == 0) {
    thread.join();
    return std::move(*result);
  }
  const int code = context.out.Error(
      context.what, absl::CancelledError("interrupted"), 128 + signal);
  // The call may still be inside gRPC: leave without unwinding it.
  ExitAfter(std::move(on_interrupt), code);
}

// Without --wait, one request without a deadline (it keeps its place in
// the queue however long). With --wait, repeats `attempt(wait)` in requests
// of at most an hour until it succeeds, fails otherwise, or the wait ran
// out; a repeated request queues anew.
template <typename T>
absl::StatusOr<T> WaitFor(
    const HoldSettings& settings,
    const std::function<absl::StatusOr<T>(absl::Duration)>& attempt) {
  if (!settings.wait.has_value()) return attempt(absl::InfiniteDuration());
  if (*settings.wait <= absl::ZeroDuration()) {
    return attempt(absl::ZeroDuration());
  }
  const absl::Time deadline = settings.wait.has_value()
                                  ? absl::Now() + *settings.wait
                                  : absl::InfiniteFuture();
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    absl::StatusOr<T> result =
        attempt(std::clamp(left, absl::Milliseconds(1), kMaxWaitPerRequest));
    if (result.ok() ||
        result.status().code() != absl::StatusCode::kDeadlineExceeded ||
        absl::Now() >= deadline) {
      return result;
    }
  }
}

// Follows the session's local lease for a hold and says when the command
// must begin to stop: `stop_offset` after the local lease ends, or at once
// when the cell said the session or the lock is gone. Only the local lease
// and the monotonic clock decide, not the library's state machine, so a
// keep-alive thread stuck in a connection attempt cannot delay the stop.
class LeaseWatch {
 public:
  LeaseWatch(const Context& context, const Session& session,
             absl::Duration stop_offset, std::function<bool()> still_ours)
      : context_(context),
        session_(session),
        stop_offset_(stop_offset),
        still_ours_(std::move(still_ours)),
        lease_end_(absl::Now() + session.LocalLeaseRemaining()) {}

  absl::Time StopAt() {
    const absl::Time now = absl::Now();
    // still_ours_ first: it is false in jeopardy, and a lease renewed in
    // between must not make that look like a lost lock.
    const bool ours = still_ours_();
    const absl::Duration remaining = session_.LocalLeaseRemaining();
    if (remaining > absl::ZeroDuration()) {
      lease_end_ = now + remaining;
      if (in_jeopardy_) {
        in_jeopardy_ = false;
        absl::FPrintF(stderr, "lockctl: %s: session %d recovered\n",
                      context_.what, session_.id());
      }
      if (!ours) {
        why_ = "the cell reported the lock lost";
        return now;
      }
    } else if (!in_jeopardy_) {
      in_jeopardy_ = true;
      absl::FPrintF(
          stderr,
          "lockctl: %s: session %d in jeopardy (no leader answered); %s "
          "unless one does within %s\n",
          context_.what, session_.id(),
          context_.args.has_exec ? "stopping CMD" : "giving up",
          absl::FormatDuration(absl::Trunc(
              std::max(lease_end_ + stop_offset_ - now, absl::ZeroDuration()),
              absl::Milliseconds(1))));
    }
    const SessionState state = session_.state();
    if (state == SessionState::kExpired || state == SessionState::kClosed) {
      why_ = absl::StrCat("the cell ended session ", session_.id());
      return std::min(now, lease_end_ + stop_offset_);
    }
    if (in_jeopardy_) {
      why_ = absl::StrCat("session ", session_.id(),
                          " got no answer from a leader since its lease "
                          "ended at ",
                          FormatTimeMs(absl::ToUnixMillis(lease_end_)));
    } else {
      why_ = absl::StrCat("session ", session_.id(),
                          "'s lease ran short before a leader renewed it");
    }
    return lease_end_ + stop_offset_;
  }

  const std::string& why() const { return why_; }

 private:
  const Context& context_;
  const Session& session_;
  const absl::Duration stop_offset_;
  const std::function<bool()> still_ours_;
  absl::Time lease_end_;
  bool in_jeopardy_ = false;
  std::string why_;
};

// Holds what was acquired, running CMD if there is one: the common part of
// lock and elect.
int HoldAndRun(Context& context, Session& session, const HoldSettings& settings,
               const v1::Sequencer& sequencer,
               std::vector<std::pair<std::string, std::string>> env,
               std::function<bool()> still_ours,
               std::function<bool()> finished) {
  env.emplace_back("LOCKD_SEQUENCER", EncodeSequencer(sequencer));
  env.emplace_back("LOCKD_LOCK_GENERATION",
                   absl::StrCat(sequencer.lock_generation()));
  pid_t child = -1;
  if (context.args.has_exec) {
    absl::StatusOr<pid_t> started = StartChild(context.args.exec, env);
    if (!started.ok()) return context.Fail(started.status());
    child = *started;
  } else {
    // An election speaks of leading and shows the value; a lock of holding.
    std::string election, value;
    for (const auto& [name, text] : env) {
      if (name == "LOCKD_ELECTION") election = text;
      if (name == "LOCKD_ELECTION_VALUE") value = text;
    }
    if (context.out.json()) {
      JsonObject json;
      if (!election.empty()) {
        json.String("election", election).String("value", value);
      }
      context.out.Json(json.String("path", sequencer.path())
                           .Uint("lock_generation", sequencer.lock_generation())
                           .Uint("session_id", sequencer.session_id())
                           .String("sequencer", EncodeSequencer(sequencer))
                           .str());
    } else if (!election.empty()) {
      context.out.Line(absl::StrCat(context.what, ": leading with value ",
                                    value, ", generation ",
                                    sequencer.lock_generation(), ", sequencer ",
                                    EncodeSequencer(sequencer)));
      absl::FPrintF(stderr,
                    "lockctl: leading until interrupted (Ctrl-C) or `resign` "
                    "on standard input; `proclaim VALUE` changes the value\n");
    } else {
      context.out.Line(absl::StrCat(context.what, ": held, generation ",
                                    sequencer.lock_generation(), ", sequencer ",
                                    EncodeSequencer(sequencer)));
      absl::FPrintF(stderr, "lockctl: holding until interrupted (Ctrl-C)\n");
    }
  }

  LeaseWatch watch(context, session, settings.stop_offset,
                   std::move(still_ours));
  const HoldOutcome outcome = Hold(
      child, [&] { return watch.StopAt(); }, settings.kill_grace, finished);
  if (outcome.stopped_leftovers) {
    absl::FPrintF(stderr,
                  "lockctl: %s: CMD exited but left processes in its group; "
                  "stopped them before releasing\n",
                  context.what);
  }
  if (outcome.kind != HoldOutcome::kLost) {
    if (absl::Status closed = session.Close(); !closed.ok()) {
      absl::FPrintF(stderr,
                    "lockctl: %s: could not close session %d (%s); the lock "
                    "is released when its lease runs out\n",
                    context.what, session.id(), closed.message());
    }
    return outcome.kind == HoldOutcome::kChildExited
               ? ExitCodeOfChild(outcome.wait_status)
               : kExitOk;
  }
  std::string why = watch.why();
  if (child > 0) {
    absl::StrAppend(&why, "; stopped CMD (pid ", child, ", ");
    const int code = ExitCodeOfChild(outcome.wait_status);
    absl::StrAppend(&why,
                    code >= 128 ? absl::StrCat("signal ", code - 128)
                                : absl::StrCat("exit ", code),
                    ")");
  }
  const int code = context.out.Error(context.what, absl::UnavailableError(why),
                                     kExitSessionLost);
  // The cell may be unreachable: closing (releasing a lock the cell still
  // counts as held) gets a moment, not --timeout.
  ExitAfter([&session] { session.Close().IgnoreError(); }, code);
}

// The flow of lock and elect: opens the session, acquires with `attempt`
// (repeated as --wait says; interruptible) and holds the Lock or Election it
// returns while `still_ours` says so, running CMD if there is one.
template <typename Held>
int AcquireAndHold(
    Context& context, bool shared,
    const std::function<absl::StatusOr<std::unique_ptr<Held>>(
        Session&, const HoldSettings&, absl::Duration wait)>& attempt,
    const std::function<bool(const Held&)>& still_ours,
    std::vector<std::pair<std::string, std::string>> env,
    const std::function<bool(Held&)>& finished = nullptr) {
  absl::StatusOr<HoldSettings> settings =
      ParseHoldSettings(context.args, shared);
  if (!settings.ok()) {
    return context.Usage(std::string(settings.status().message()));
  }
  absl::StatusOr<std::unique_ptr<Session>> session =
      Interruptible<std::unique_ptr<Session>>(
          context,
          [&] {
            return context.OpenSession(
                settings->ttl,
                std::max(settings->stop_offset, absl::ZeroDuration()));
          },
          nullptr);
  if (!session.ok()) return context.Fail(session.status());
  Session& s = **session;
  absl::StatusOr<std::unique_ptr<Held>> acquired =
      Interruptible<std::unique_ptr<Held>>(
          context,
          [&] {
            return WaitFor<std::unique_ptr<Held>>(
                *settings, [&](absl::Duration wait) {
                  return attempt(s, *settings, wait);
                });
          },
          [&s] { s.Close().IgnoreError(); });
  if (!acquired.ok()) {
    const SessionState state = s.state();
    if (state == SessionState::kExpired) {
      return context.out.Error(
          context.what,
          absl::UnavailableError(absl::StrCat(
              "session ", s.id(),
              " expired while waiting: ", acquired.status().message())),
          kExitSessionLost);
    }
    const bool cell_silent =
        acquired.status().code() == absl::StatusCode::kDeadlineExceeded &&
        s.LocalLeaseRemaining() == absl::ZeroDuration();
    s.Close().IgnoreError();
    if (cell_silent) {
      return context.Fail(absl::UnavailableError(acquired.status().message()));
    }
    return context.Fail(acquired.status(), /*acquiring=*/true);
  }
  Held& held = **acquired;
  std::function<bool()> done;
  if (finished != nullptr && !context.args.has_exec) {
    done = [&] { return finished(held); };
  }
  return HoldAndRun(
      context, s, *settings, held.sequencer(), std::move(env),
      [&] { return still_ours(held); }, std::move(done));
}

}  // namespace

int RunLock(Context& context) {
  const std::string& path = context.args.positional[0];
  const bool shared = context.args.Has("shared");
  const v1::LockMode mode = shared ? v1::SHARED : v1::EXCLUSIVE;
  return AcquireAndHold<Lock>(
      context, shared,
      [&](Session& session, const HoldSettings& settings, absl::Duration wait) {
        return wait <= absl::ZeroDuration()
                   ? Lock::TryAcquire(&session, path, mode, settings.lock_delay)
                   : Lock::Acquire(&session, path, mode, wait,
                                   settings.lock_delay);
      },
      [](const Lock& lock) { return lock.IsHeld(); }, {});
}

// Reads what standard input holds without blocking, line by line: the
// commands of a leading `elect` without CMD.
class StdinLines {
 public:
  // The next complete line, if one arrived.
  std::optional<std::string> Next() {
    while (!eof_) {
      pollfd ready{STDIN_FILENO, POLLIN, 0};
      if (poll(&ready, 1, 0) <= 0) break;
      char buffer[4096];
      const ssize_t n = read(STDIN_FILENO, buffer, sizeof(buffer));
      if (n <= 0) {
        eof_ = true;
        break;
      }
      pending_.append(buffer, static_cast<size_t>(n));
    }
    const size_t newline = pending_.find('\n');
    if (newline == std::string::npos) return std::nullopt;
    std::string line = pending_.substr(0, newline);
    pending_.erase(0, newline + 1);
    return line;
  }

 private:
  std::string pending_;
  bool eof_ = false;
};

int RunElect(Context& context) {
  const std::string& name = context.args.positional[0];
  const std::string& value = context.args.positional[1];
  StdinLines input;
  // While leading without CMD: `proclaim VALUE` on standard input changes
  // the value, `resign` resigns and ends the command.
  auto commands = [&](Election& election) {
    while (std::optional<std::string> line = input.Next()) {
      absl::string_view command = absl::StripAsciiWhitespace(*line);
      if (command == "resign") return true;
      if (absl::ConsumePrefix(&command, "proclaim ")) {
        const std::string next(absl::StripLeadingAsciiWhitespace(command));
        if (absl::Status proclaimed = election.Proclaim(next);
            !proclaimed.ok()) {
          absl::FPrintF(stderr, "lockctl: %s: proclaim failed: %s\n",
                        context.what, proclaimed.message());
        } else if (context.out.json()) {
          context.out.Json(JsonObject()
                               .String("election", name)
                               .String("value", next)
                               .str());
        } else {
          context.out.Line(
              absl::StrCat(context.what, ": proclaimed value ", next));
        }
      } else if (!command.empty()) {
        absl::FPrintF(stderr,
                      "lockctl: %s: unknown input \"%s\": type `proclaim "
                      "VALUE` or `resign`\n",
                      context.what, command);
      }
    }
    return false;
  };
  return AcquireAndHold<Election>(
      context, /*shared=*/false,
      [&](Session& session, const HoldSettings& settings, absl::Duration wait) {
        return Election::Campaign(&session, name, value, wait,
                                  settings.lock_delay);
      },
      [](const Election& election) { return election.IsLeader(); },
      {{"LOCKD_ELECTION", name}, {"LOCKD_ELECTION_VALUE", value}}, commands);
}

int RunLeader(Context& context) {
  const std::string& name = context.args.positional[0];
  absl::StatusOr<v1::LeaderInfo> leader =
      Election::Leader(context.client.get(), name);
  if (!leader.ok()) return context.Fail(leader.status());
  if (context.out.json()) {
    context.out.Json(LeaderJson(name, *leader));
  } else {
    Table table({"ELECTION", "VALUE", "SESSION", "GENERATION"});
    table.AddRow({name, leader->value(), absl::StrCat(leader->session_id()),
                  absl::StrCat(leader->lock_generation())});
    table.Print(stdout);
  }
  return kExitOk;
}

std::string LeaderJson(const std::string& name, const v1::LeaderInfo& leader) {
  JsonObject json;
  json.String("election", name);
  if (leader.session_id() == 0) {
    json.Raw("leader", "null");
  } else {
    json.Raw("leader", JsonObject()
                           .String("value", leader.value())
                           .Uint("session_id", leader.session_id())
                           .Uint("lock_generation", leader.lock_generation())
                           .str());
  }
  return json.str();
}

int RunObserve(Context& context) {
  const std::string& name = context.args.positional[0];
  absl::StatusOr<uint64_t> count = context.args.Uint("count", 0);
  if (!count.ok()) return context.Usage(std::string(count.status().message()));
  absl::StatusOr<std::unique_ptr<ElectionObserver>> observer =
      ElectionObserver::Start(context.client.get(), name);
  if (!observer.ok()) return context.Fail(observer.status());
  uint64_t printed = 0;
  absl::Status failed;
  // Interrupting an observation is its normal end (exit code 0).
  WaitInterruptibly([&] {
    absl::StatusOr<v1::LeaderInfo> next =
        (*observer)->Next(absl::Milliseconds(100));
    if (!next.ok()) {
      if (next.status().code() == absl::StatusCode::kDeadlineExceeded) {
        return false;
      }
      // lockctl fell behind (its output blocked): say so and go on.
      if (next.status().code() == absl::StatusCode::kDataLoss) {
        absl::FPrintF(stderr, "lockctl: %s: %s\n", context.what,
                      next.status().message());
        return false;
      }
      failed = next.status();
      return true;
    }
    if (context.out.json()) {
      context.out.Json(LeaderJson(name, *next));
    } else if (next->session_id() == 0) {
      context.out.Line(
          absl::StrCat(FormatTimeMs(absl::ToUnixMillis(absl::Now())), "  ",
                       name, ": no leader"));
    } else {
      context.out.Line(absl::StrCat(
          FormatTimeMs(absl::ToUnixMillis(absl::Now())), "  ", name, ": ",
          next->value(), " (session ", next->session_id(), ", generation ",
          next->lock_generation(), ")"));
    }
    return ++printed == *count;
  });
  if (!failed.ok()) return context.Fail(failed);
  return kExitOk;
}

int RunCheckSequencer(Context& context) {
  absl::StatusOr<v1::Sequencer> sequencer =
      DecodeSequencer(context.args.positional[0]);
  if (!sequencer.ok()) {
    return context.Usage(std::string(sequencer.status().message()));
  }
  absl::StatusOr<v1::CheckSequencerResponse> checked =
      context.client->CheckSequencer(*sequencer);
  if (!checked.ok()) return context.Fail(checked.status());
  if (context.out.json()) {
    context.out.Json(JsonObject()
                         .String("sequencer", context.args.positional[0])
                         .Bool("valid", checked->valid())
                         .String("reason", checked->reason())
                         .str());
  } else if (checked->valid()) {
    context.out.Line("valid");
  } else {
    context.out.Line(absl::StrCat("invalid: ", checked->reason()));
  }
  return checked->valid() ? kExitOk : kExitSequencerInvalid;
}

}  // namespace lockd::cli
