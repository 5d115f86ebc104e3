// lockctl lock, elect, leader, observe and check-sequencer.

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
// Covers lockctl noticing the loss (20 ms polling) and the child's death
// after SIGKILL, with room to spare.
constexpr absl::Duration kStopSlack = absl::Milliseconds(200);
// The cell's clock may run this much fast (docs/server.md, "Time").
constexpr double kCellClockRate = 1.05;

// The session and timing settings of lock and elect.
struct HoldSettings {
  absl::Duration ttl;
  absl::Duration lock_delay;
  absl::Duration kill_grace;
  // Unset: wait until interrupted.
  std::optional<absl::Duration> wait;
  // How long the session may stay in jeopardy before CMD is stopped.
  absl::Duration recovery_window;
};

absl::StatusOr<HoldSettings> ParseHoldSettings(const ParsedArgs& args) {
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
  if (args.Has("wait")) {
    absl::StatusOr<absl::Duration> wait = args.Duration("wait", {});
    if (!wait.ok()) return wait.status();
    settings.wait = *wait;
  }
  if (!args.has_exec) {
    // Nothing runs that could outlive the lock: the library's default.
    settings.recovery_window = SessionOptions().grace_period;
    return settings;
  }
  // CMD must be dead before the cell can grant the lock to someone else:
  // that is no earlier than lock-delay (cell time, which may run 5% fast)
  // after the cell expired the session, which is no earlier than the end
  // of the local lease, where jeopardy starts.
  settings.recovery_window =
      settings.lock_delay / kCellClockRate - settings.kill_grace - kStopSlack;
  if (settings.recovery_window < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--lock-delay=", absl::FormatDuration(settings.lock_delay),
        " is too short for --kill-grace=",
        absl::FormatDuration(settings.kill_grace),
        ": CMD could still run when the cell hands the lock on; use "
        "--lock-delay of at least ",
        absl::FormatDuration(
            absl::Ceil((settings.kill_grace + kStopSlack) * kCellClockRate,
                       absl::Milliseconds(100))),
        " or a shorter --kill-grace"));
  }
  return settings;
}

// Runs `call` on a thread while lockctl waits for signals. On SIGINT,
// SIGTERM, SIGHUP or SIGQUIT the session is closed (which ends a parked
// acquire), the interruption is reported, *interrupted is set to the exit
// code 128+signal and the result is CANCELLED.
template <typename T>
absl::StatusOr<T> Interruptible(Context& context, Session& session,
                                std::function<absl::StatusOr<T>()> call,
                                int* interrupted) {
  std::atomic<bool> done{false};
  absl::StatusOr<T> result = absl::UnknownError("not run");
  std::thread thread([&] {
    result = call();
    done = true;
  });
  const int signal = WaitInterruptibly([&] { return done.load(); });
  if (signal != 0) {
    session.Close().IgnoreError();
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    WaitInterruptibly([&] { return done.load() || absl::Now() > deadline; });
    if (!done) {
      // The call is still inside gRPC; the session is closed, so whatever
      // it waits for is gone. Leave without unwinding it.
      context.out.Error(context.what,
                        absl::CancelledError("interrupted while waiting"),
                        128 + signal);
      std::fflush(nullptr);
      _exit(128 + signal);
    }
    thread.join();
    *interrupted = context.out.Error(
        context.what, absl::CancelledError("interrupted while waiting"),
        128 + signal);
    return absl::CancelledError("interrupted");
  }
  thread.join();
  return result;
}

// Repeats `attempt(wait)` in requests of at most an hour until it succeeds,
// fails otherwise, or `settings.wait` (if set) ran out.
template <typename T>
absl::StatusOr<T> WaitFor(
    const HoldSettings& settings,
    const std::function<absl::StatusOr<T>(absl::Duration)>& attempt) {
  if (settings.wait.has_value() && *settings.wait <= absl::ZeroDuration()) {
    return attempt(absl::ZeroDuration());
  }
  const absl::Time deadline = settings.wait.has_value()
                                  ? absl::Now() + *settings.wait
                                  : absl::InfiniteFuture();
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("the wait ran out");
    }
    absl::StatusOr<T> result = attempt(std::min(left, kMaxWaitPerRequest));
    if (result.ok() ||
        result.status().code() != absl::StatusCode::kDeadlineExceeded ||
        settings.wait.has_value()) {
      return result;
    }
  }
}

// Holds what was acquired, running CMD if there is one: the common part of
// lock and elect. `still_held` says whether the lock or leadership is
// still ours (true in jeopardy: the recovery window decides then).
int HoldAndRun(Context& context, Session& session, const HoldSettings& settings,
               const v1::Sequencer& sequencer,
               std::vector<std::pair<std::string, std::string>> env,
               const std::function<bool()>& held_while_healthy) {
  SessionState last_state = SessionState::kHealthy;
  absl::Time jeopardy_since = absl::Now();
  const std::function<bool()> held = [&] {
    const SessionState state = session.state();
    if (state != last_state) {
      if (state == SessionState::kJeopardy) {
        jeopardy_since = absl::Now();
        absl::FPrintF(stderr,
                      "lockctl: %s: session %d in jeopardy (no leader "
                      "answered); %s in %s unless one does\n",
                      context.what, session.id(),
                      context.args.has_exec ? "stopping CMD" : "giving up",
                      absl::FormatDuration(settings.recovery_window));
      } else if (state == SessionState::kHealthy) {
        absl::FPrintF(stderr, "lockctl: %s: session %d recovered\n",
                      context.what, session.id());
      }
      last_state = state;
    }
    return state == SessionState::kJeopardy || held_while_healthy();
  };

  env.emplace_back("LOCKD_SEQUENCER", EncodeSequencer(sequencer));
  env.emplace_back("LOCKD_LOCK_GENERATION",
                   absl::StrCat(sequencer.lock_generation()));
  pid_t child = -1;
  if (context.args.has_exec) {
    absl::StatusOr<pid_t> started = StartChild(context.args.exec, env);
    if (!started.ok()) return context.Fail(started.status());
    child = *started;
  } else if (context.out.json()) {
    context.out.Json(JsonObject()
                         .String("path", sequencer.path())
                         .Uint("lock_generation", sequencer.lock_generation())
                         .Uint("session_id", sequencer.session_id())
                         .String("sequencer", EncodeSequencer(sequencer))
                         .str());
  } else {
    context.out.Line(absl::StrCat(context.what, ": held, generation ",
                                  sequencer.lock_generation(), ", sequencer ",
                                  EncodeSequencer(sequencer)));
    absl::FPrintF(stderr, "lockctl: holding until interrupted (Ctrl-C)\n");
  }

  const HoldOutcome outcome = Hold(child, held, settings.kill_grace);
  switch (outcome.kind) {
    case HoldOutcome::kChildExited:
    case HoldOutcome::kInterrupted:
      session.Close().IgnoreError();
      return outcome.kind == HoldOutcome::kChildExited
                 ? ExitCodeOfChild(outcome.wait_status)
                 : kExitOk;
    case HoldOutcome::kLost:
      break;
  }
  const SessionState state = session.state();
  std::string why =
      state == SessionState::kJeopardy || state == SessionState::kExpired
          ? absl::StrCat(
                "session ", session.id(), " lost after ",
                absl::FormatDuration(absl::Trunc(absl::Now() - jeopardy_since,
                                                 absl::Milliseconds(1))),
                " in jeopardy")
          : absl::StrCat("the cell reported the lock lost (session ",
                         session.id(), ")");
  if (child > 0) {
    absl::StrAppend(
        &why, "; stopped CMD (pid ", child, ", ",
        ExitCodeOfChild(outcome.wait_status) >= 128
            ? absl::StrCat("signal ",
                           ExitCodeOfChild(outcome.wait_status) - 128)
            : absl::StrCat("exit ", ExitCodeOfChild(outcome.wait_status)),
        ")");
  }
  session.Close().IgnoreError();
  return context.out.Error(context.what, absl::UnavailableError(why),
                           kExitSessionLost);
}

// The flow of lock and elect: opens the session, acquires with `attempt`
// (repeated as --wait says; interruptible) and holds the Lock or Election it
// returns while `still_ours` says so, running CMD if there is one.
template <typename Held>
int AcquireAndHold(
    Context& context,
    const std::function<absl::StatusOr<std::unique_ptr<Held>>(
        Session&, const HoldSettings&, absl::Duration wait)>& attempt,
    const std::function<bool(const Held&)>& still_ours,
    std::vector<std::pair<std::string, std::string>> env) {
  absl::StatusOr<HoldSettings> settings = ParseHoldSettings(context.args);
  if (!settings.ok()) {
    return context.Usage(std::string(settings.status().message()));
  }
  absl::StatusOr<std::unique_ptr<Session>> session =
      context.OpenSession(settings->ttl, settings->recovery_window);
  if (!session.ok()) return context.Fail(session.status());
  Session& s = **session;
  int interrupted = 0;
  absl::StatusOr<std::unique_ptr<Held>> acquired =
      Interruptible<std::unique_ptr<Held>>(
          context, s,
          [&] {
            return WaitFor<std::unique_ptr<Held>>(
                *settings, [&](absl::Duration wait) {
                  return attempt(s, *settings, wait);
                });
          },
          &interrupted);
  if (!acquired.ok()) {
    if (interrupted != 0) return interrupted;
    s.Close().IgnoreError();
    return context.Fail(acquired.status(), /*acquiring=*/true);
  }
  const Held& held = **acquired;
  return HoldAndRun(context, s, *settings, held.sequencer(), std::move(env),
                    [&] { return still_ours(held); });
}

}  // namespace

int RunLock(Context& context) {
  const std::string& path = context.args.positional[0];
  const v1::LockMode mode =
      context.args.Has("shared") ? v1::SHARED : v1::EXCLUSIVE;
  return AcquireAndHold<Lock>(
      context,
      [&](Session& session, const HoldSettings& settings, absl::Duration wait) {
        return wait <= absl::ZeroDuration()
                   ? Lock::TryAcquire(&session, path, mode, settings.lock_delay)
                   : Lock::Acquire(&session, path, mode, wait,
                                   settings.lock_delay);
      },
      [](const Lock& lock) { return lock.IsHeld(); }, {});
}

int RunElect(Context& context) {
  const std::string& name = context.args.positional[0];
  const std::string& value = context.args.positional[1];
  return AcquireAndHold<Election>(
      context,
      [&](Session& session, const HoldSettings& settings, absl::Duration wait) {
        return Election::Campaign(&session, name, value, wait,
                                  settings.lock_delay);
      },
      [](const Election& election) { return election.IsLeader(); },
      {{"LOCKD_ELECTION", name}, {"LOCKD_ELECTION_VALUE", value}});
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
