#include "cli/commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/context.h"
#include "cli/supervisor.h"

namespace lockd::cli {
namespace {

constexpr char kDefaultEndpoints[] =
    "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

// One command of lockctl. The table in Commands() fills the fields in
// this order, each commented with its name where that is not obvious.
struct Command {
  std::string name;
  std::string arguments;  // As in the synopsis, e.g. "PATH [VALUE]".
  std::string summary;    // One line for `lockctl help`.
  std::string details;    // Paragraphs for `lockctl help NAME`.
  std::vector<FlagSpec> flags;
  std::vector<std::string> examples;
  // Bounds of the number of positional arguments.
  size_t min_args;
  size_t max_args;
  // Accepts "-- CMD [ARGS...]". The other commands take what follows "--"
  // as more positional arguments.
  bool runs_command;
  // Handles signals itself (long-running): signals are blocked before the
  // client starts its threads.
  bool handles_signals;
  int (*run)(Context&);
};

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"endpoints", "HOST:PORT,...",
       "Replicas of the cell (any will do). Default: $LOCKD_ENDPOINTS, else " +
           std::string(kDefaultEndpoints) + "."},
      {"output", "table|json",
       "table (default) for people; json prints one JSON value per result "
       "line, and errors (usage errors included) as {\"error\": {...}} on "
       "stdout."},
      {"timeout", "DURATION",
       "How long a call keeps retrying while no leader answers before "
       "lockctl gives up with exit code 7. Default 30s."},
      {"ca", "FILE",
       "PEM file of the cell's CA: talk TLS and verify the replicas. "
       "Default: $LOCKD_CA; none: plaintext."},
      {"cert", "FILE",
       "PEM file of a client certificate (with --key), for a cell that "
       "checks client certificates. Default: $LOCKD_CERT."},
      {"key", "FILE", "PEM file of --cert's private key. Default: $LOCKD_KEY."},
      {"help", "", "Show help for lockctl or the command."},
  };
  return *flags;
}

// Flags of the commands that hold a session while they run.
// `timing` says where the stop's timing is explained.
std::vector<FlagSpec> HoldFlags(const std::string& holding,
                                const std::string& timing) {
  return {
      {"wait", "DURATION",
       "How long to wait for " + holding +
           " (0: try once). Default: until interrupted, keeping the place "
           "in the queue. Exit code 5 if it runs out. The cell parks a "
           "request with a deadline for at most an hour: a --wait longer "
           "than that asks again every hour and so queues anew behind the "
           "waiters that came meanwhile."},
      {"ttl", "DURATION", "Session lease length. Default 10s."},
      {"lock-delay", "DURATION",
       "If the session is lost while holding, nobody gets " + holding +
           " for this long (at most 60s). Default 10s."},
      {"kill-grace", "DURATION",
       "When the hold is lost, CMD's group gets SIGTERM and, this long "
       "after, SIGKILL. Default 3s. The stop is timed so that CMD is gone "
       "before the lock can be handed on (" +
           timing + ")."},
  };
}

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"status",
       "",
       "Show the cell's leader, epoch and log indices.",
       "Asks every replica for its status and prints the leader's view: "
       "leader id and address, epoch, commit/applied/snapshot indices, live "
       "sessions, and how many replicas answered. Exit code 7 if no replica "
       "leads with a valid lease.",
       /*flags=*/{},
       {"lockctl status", "lockctl status --output=json"},
       /*min_args=*/0,
       /*max_args=*/0,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunStatus},
      {"members",
       "",
       "List the replicas: role, lease, epoch, indices, health.",
       "One row per replica of the cell (as the replicas report the "
       "membership), each asked directly. HEALTH is `ok` or why the "
       "replica could not be asked. Exit code 7 if none answered.",
       /*flags=*/{},
       {"lockctl members"},
       /*min_args=*/0,
       /*max_args=*/0,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunMembers},
      {"member",
       "list | add ID ADDRESS PEER_ADDRESS | promote ID | remove ID | "
       "handover [ID]",
       "Change the cell's membership (admins).",
       "`member list` shows the configuration as the leader holds it: "
       "every voter and learner with its client and peer address and how "
       "far behind the leader it is, and the retired ids. `member add` adds "
       "a replica under a NEW id as a learner (start it first with `lockd "
       "--join`); it receives the log and counts in no quorum. `member "
       "promote` makes a learner a voter once it is at most 1000 slots "
       "behind. `member remove` removes a voter or learner and retires its "
       "id for good; removing the leader makes it hand leadership over "
       "first. `member handover` moves leadership to ID or to the most "
       "up-to-date voter. One change at a time: exit code 4 while another "
       "is in flight. See docs/operations.md for replacing a replica.",
       /*flags=*/{},
       {"lockctl member list",
        "lockctl member add 4 10.0.0.4:7001 10.0.0.4:7101",
        "lockctl member promote 4", "lockctl member remove 2",
        "lockctl member handover"},
       /*min_args=*/1,
       /*max_args=*/4,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunMember},
      {"snapshot",
       "save FILE",
       "Save a consistent backup of the cell's state (admins).",
       "Asks the leader for a snapshot of its applied state (taken under "
       "its lease, so it holds every acknowledged write), fetches it in "
       "1 MiB chunks, checks its CRC32C and writes FILE (through a "
       "temporary file renamed into place): the log index it reflects, the "
       "cell's identity and configuration, and the state. `lockd "
       "--restore=FILE` founds a new cell from it (docs/operations.md, "
       "\"Backup and restore\"). Exit code 7 if no leader serves, 4 if the "
       "leader changed during the transfer (run it again).",
       /*flags=*/{},
       {"lockctl snapshot save /backups/lockd-$(date +%F).snap"},
       /*min_args=*/2,
       /*max_args=*/2,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunSnapshot},
      {"get",
       "PATH",
       "Print a node's content.",
       "Prints the content of PATH exactly as stored (with --output=json "
       "also its metadata; content that is not UTF-8 comes as "
       "content_base64). On a terminal, a newline is added after content "
       "that does not end in one. Exit code 3 if the node does not exist.",
       /*flags=*/{},
       {"lockctl get /config/db", "lockctl get /config/db -o json"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunGet},
      {"put",
       "PATH [VALUE]",
       "Create or replace a node's content.",
       "Sets PATH's content to VALUE (or to standard input, byte for byte, "
       "when VALUE is left out), creating the node if it does not exist. "
       "Content is at most 64 KiB (65536 bytes, the cell's limit); a larger "
       "value is a usage error (exit code 2). A VALUE that starts with '-' "
       "goes after --. With --expect=GEN the write happens only if the "
       "node's content generation is still GEN (compare-and-set; see "
       "`lockctl stat`); exit code 4 if not.",
       {{"create", "", "Fail with exit code 4 if the node exists."},
        {"expect", "GEN",
         "Compare-and-set: only if the content generation is GEN."},
        {"parents", "", "Create missing parent nodes (empty)."}},
       {"lockctl put /config/db primary=10.0.0.5",
        "lockctl put --expect=3 /config/db primary=10.0.0.6",
        "lockctl put --parents /apps/web/owner alice",
        "lockctl put /counter -- -5", "lockctl put /blob < blob.bin"},
       /*min_args=*/1,
       /*max_args=*/2,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunPut},
      {"create",
       "PATH [VALUE]",
       "Create a node: plain, ephemeral or sequential.",
       "Creates PATH with VALUE (default empty); the parent must exist. "
       "Prints the created path, which for --sequential is PATH with a "
       "10-digit number appended (PATH itself is the prefix: /jobs/job- "
       "makes /jobs/job-0000000001, then ...0002). Exit code 4 if the node "
       "exists. An --ephemeral node lives as long as the session that made "
       "it: lockctl keeps it until interrupted, then deletes it and exits "
       "0; exit code 6 if the session is lost (the cell deletes the node "
       "then).",
       {{"ephemeral", "", "Delete the node when lockctl stops."},
        {"sequential", "", "Append a 10-digit sequence number to PATH."},
        {"ttl", "DURATION",
         "Session lease of an --ephemeral node. Default 10s."}},
       {"lockctl create /config/flags on",
        "lockctl create --sequential /jobs/job- payload",
        "lockctl create --ephemeral /services/web/host-a 10.0.0.5:80"},
       /*min_args=*/1,
       /*max_args=*/2,
       /*runs_command=*/false,
       /*handles_signals=*/true,
       RunCreate},
      {"ls",
       "[PATH]",
       "List a node's children.",
       "Lists the child names of PATH (default /) in byte order.",
       /*flags=*/{},
       {"lockctl ls /", "lockctl ls /election"},
       /*min_args=*/0,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunList},
      {"rm",
       "PATH",
       "Delete a node.",
       "Deletes PATH. The node must have no children (exit code 4 "
       "otherwise). With --expect=GEN only if its content generation is "
       "GEN.",
       {{"expect", "GEN",
         "Compare-and-set: only if the content generation is GEN."}},
       {"lockctl rm /config/old", "lockctl rm --expect=7 /config/db"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunRemove},
      {"stat",
       "PATH",
       "Show a node's metadata.",
       "Prints instance, content and lock generations, checksum, size, "
       "owner (ephemeral nodes), children and times of PATH.",
       /*flags=*/{},
       {"lockctl stat /config/db"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunStat},
      {"acl",
       "get|set PATH",
       "Show or change a node's ACL names.",
       "Every node names three ACLs (docs/security.md): who may read it, "
       "who may write it (set, delete, create children, lock, campaign) "
       "and who may change these names. Each is - (everyone) or NAME, the "
       "node /acl/NAME whose content lists principals (client certificate "
       "identities, separated by spaces, commas or newlines; * is anyone). "
       "`acl set` changes the names given and keeps the others; it needs "
       "the change-ACL right and fails with exit code 4 if the names "
       "changed meanwhile. Use --read= (empty) for everyone.",
       {{"read", "NAME", "ACL of the read right (acl set)."},
        {"write", "NAME", "ACL of the write right (acl set)."},
        {"change", "NAME", "ACL of the change-ACL right (acl set)."}},
       {"lockctl acl get /config", "lockctl put /acl/ops 'alice bob'",
        "lockctl acl set /config --write=ops --change=ops"},
       /*min_args=*/2,
       /*max_args=*/2,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunAcl},
      {"watch",
       "PATH",
       "Print changes to a node as they happen.",
       "Opens a session, watches PATH (which must exist) and prints one "
       "line per event: content changed, child added or removed, node "
       "deleted, and the session's own SESSION_EXPIRING/LEADER_CHANGED. "
       "Runs until interrupted, until --count events were printed or until "
       "PATH is deleted. If the cell had to drop events (more than 1024 "
       "piled up unread), a warning says how many: re-read the node then. "
       "Exit code 6 if the session is lost.",
       {{"count", "N", "Exit after N events."},
        {"ttl", "DURATION", "Session lease length. Default 10s."}},
       {"lockctl watch /config/db", "lockctl watch --count=1 /config/db"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/true,
       RunWatch},
      {"sessions",
       "",
       "List the cell's live sessions.",
       "One row per session: id, client name, TTL, lease left (cell time), "
       "the locks it holds and how many ephemeral nodes it owns.",
       /*flags=*/{},
       {"lockctl sessions", "lockctl sessions -o json"},
       /*min_args=*/0,
       /*max_args=*/0,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunSessions},
      {"locks",
       "[PREFIX]",
       "List locks that are held, waited for or in lock-delay.",
       "One row per node under PREFIX (default /) whose lock is held, "
       "waited for or delayed: lock generation, holders (session/mode), "
       "waiters in FIFO order and the lock-delay left.",
       /*flags=*/{},
       {"lockctl locks", "lockctl locks /jobs"},
       /*min_args=*/0,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunLocks},
      {"lock",
       "PATH [-- CMD [ARGS...]]",
       "Hold a lock, optionally while running a command.",
       "Acquires the lock on PATH (the node is created if missing; its "
       "parent must exist), exclusive unless --shared, waiting in FIFO "
       "order.\n\n"
       "With `-- CMD`, runs CMD in a process group of its own while "
       "holding the lock, with LOCKD_SEQUENCER (pass it to servers that "
       "check it with `lockctl check-sequencer` or Client::CheckSequencer) "
       "and LOCKD_LOCK_GENERATION in its environment. Signals sent to "
       "lockctl are forwarded to CMD's group; in a terminal, CMD's group "
       "gets the terminal. When CMD exits, whatever it left in its group is "
       "stopped, the lock is released and lockctl exits with CMD's exit "
       "status (128+N if CMD died of signal N).\n\n"
       "If no leader renews the session, CMD's group gets SIGTERM at "
       "lock-delay/1.05 - kill-grace - 200ms after the local lease ended "
       "(for --shared, kill-grace + 200ms before it ends), SIGKILL "
       "kill-grace later, and lockctl exits 6. That is before the cell can "
       "give the lock to anyone else: the cell expires the session no "
       "earlier than the local lease ends and then keeps an exclusive lock "
       "for the lock-delay (docs/lockctl.md has the argument). CMD is also "
       "killed if lockctl itself dies.\n\n"
       "Without CMD, holds the lock until interrupted (SIGINT, SIGTERM, "
       "SIGHUP, SIGQUIT), then releases it and exits 0; exits 6 when the "
       "hold is lost.",
       [] {
         std::vector<FlagSpec> flags = {
             {"shared", "", "Take a shared (reader) lock."}};
         for (FlagSpec& flag : HoldFlags("the lock", "the timing is above"))
           flags.push_back(flag);
         return flags;
       }(),
       {"lockctl lock /jobs/reindex -- ./reindex.sh",
        "lockctl lock --wait=30s /jobs/reindex -- sh -c 'echo "
        "$LOCKD_LOCK_GENERATION'",
        "lockctl lock --shared /data/snapshot -- cp -r /data /backup",
        "lockctl lock /maintenance    # hold until Ctrl-C"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/true,
       /*handles_signals=*/true,
       RunLock},
      {"elect",
       "NAME VALUE [-- CMD [ARGS...]]",
       "Elect a leader, optionally running a command while it leads.",
       "Campaigns for election NAME with VALUE (what observers see as the "
       "leader's value) and waits until elected. Then, like `lock`, runs "
       "CMD while leader with LOCKD_SEQUENCER, LOCKD_LOCK_GENERATION, "
       "LOCKD_ELECTION and LOCKD_ELECTION_VALUE in its environment, stops "
       "it the same way when the session is lost, resigns when CMD exits "
       "and exits with CMD's status. Without CMD, leads until interrupted, "
       "then resigns; meanwhile a line `proclaim VALUE` on standard input "
       "changes the leader's value and `resign` resigns and exits 0. (Only "
       "the leader's own session may proclaim or resign, so these are lines "
       "to the leading lockctl, not commands of their own.)",
       HoldFlags("the leadership", "see `lockctl help lock`"),
       {"lockctl elect scheduler host-a:8080 -- ./scheduler",
        "lockctl elect --wait=0 scheduler host-a:8080",
        "printf 'proclaim host-a:9090\\nresign\\n' | lockctl elect scheduler "
        "host-a:8080"},
       /*min_args=*/2,
       /*max_args=*/2,
       /*runs_command=*/true,
       /*handles_signals=*/true,
       RunElect},
      {"leader",
       "NAME",
       "Print the leader of an election.",
       "Prints the current leader's value, session and lock generation. "
       "Exit code 3 if nobody leads (`observe` prints that as a line).",
       /*flags=*/{},
       {"lockctl leader scheduler"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunLeader},
      {"observe",
       "NAME",
       "Print every leader change of an election.",
       "Prints the current leader of NAME, then one line per change: a new "
       "leader, a new value, or nobody leading. Follows the cell across "
       "failovers. Runs until interrupted or --count lines were printed.",
       {{"count", "N", "Exit after N lines."}},
       {"lockctl observe scheduler"},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/true,
       RunObserve},
      {"check-sequencer",
       "SEQUENCER",
       "Check that a lock sequencer is still valid.",
       "SEQUENCER is the text form lockctl exports as LOCKD_SEQUENCER "
       "(lockd1:MODE:GENERATION:SESSION:INSTANCE:PATH). Exit code 0 if its "
       "session still holds that lock in that mode at that generation, 8 "
       "(with the reason) if not.",
       /*flags=*/{},
       {"lockctl check-sequencer \"$LOCKD_SEQUENCER\""},
       /*min_args=*/1,
       /*max_args=*/1,
       /*runs_command=*/false,
       /*handles_signals=*/false,
       RunCheckSequencer},
  };
  return *commands;
}

const Command* FindCommand(const std::string& name) {
  for (const Command& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

std::string Wrap(const std::string& text, size_t indent) {
  std::string out;
  for (absl::string_view paragraph : absl::StrSplit(text, "\n\n")) {
    if (!out.empty()) out += "\n";
    std::string line(indent, ' ');
    for (absl::string_view word :
         absl::StrSplit(paragraph, ' ', absl::SkipEmpty())) {
      if (line.size() > indent && line.size() + 1 + word.size() > 78) {
        absl::StrAppend(&out, line, "\n");
        line.assign(indent, ' ');
      }
      if (line.size() > indent) line += " ";
      absl::StrAppend(&line, word);
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string FlagLines(const std::vector<FlagSpec>& flags) {
  std::string out;
  for (const FlagSpec& flag : flags) {
    const std::string name =
        flag.value_name.empty()
            ? absl::StrCat("--", flag.name)
            : absl::StrCat("--", flag.name, "=", flag.value_name);
    absl::StrAppend(&out, "  ", name, "\n", Wrap(flag.help, 6));
  }
  return out;
}

std::string ExitCodeLines() {
  return "  0  success\n"
         "  1  other error (e.g. a limit was exceeded)\n"
         "  2  usage: bad command line or argument\n"
         "  3  not found (node, leader)\n"
         "  4  precondition failed: compare-and-set mismatch, node exists,\n"
         "     node has children\n"
         "  5  lock or leadership not acquired before --wait ran out\n"
         "  6  session lost (locks must be assumed gone)\n"
         "  7  cell unavailable: no leader answered within --timeout\n"
         "  8  check-sequencer: sequencer not valid\n"
         "  With -- CMD, lockctl exits with CMD's status once CMD ran.\n";
}

std::string GeneralHelp() {
  std::string out = absl::StrCat(
      "lockctl: the command line of lockd, a distributed lock service.\n\n"
      "Usage: lockctl [GLOBAL FLAGS] COMMAND [FLAGS] [ARGS] [-- CMD "
      "[ARGS...]]\n\n",
      Wrap("Flags may come before or after the command; given twice, the "
           "last wins. After --, lock and elect take the command to run; the "
           "other commands take more arguments, which may then start with "
           "'-' (lockctl put /counter -- -5).",
           0),
      "\nCommands:\n");
  size_t width = 0;
  for (const Command& command : Commands()) {
    width = std::max(width, command.name.size());
  }
  for (const Command& command : Commands()) {
    absl::StrAppend(&out, "  ", command.name,
                    std::string(width - command.name.size() + 2, ' '),
                    command.summary, "\n");
  }
  absl::StrAppend(&out, "  help", std::string(width - 4 + 2, ' '),
                  "Show this help, or `lockctl help COMMAND`.\n\n",
                  "Global flags:\n", FlagLines(GlobalFlags()),
                  "\nExit codes:\n", ExitCodeLines(),
                  "\nExamples:\n"
                  "  lockctl status\n"
                  "  lockctl put /config/db primary=10.0.0.5\n"
                  "  lockctl lock /jobs/reindex -- ./reindex.sh\n"
                  "  lockctl elect scheduler host-a -- ./scheduler\n"
                  "  lockctl help lock\n");
  return out;
}

std::string CommandHelp(const Command& command) {
  std::string out = absl::StrCat("Usage: lockctl ", command.name);
  if (!command.flags.empty()) out += " [FLAGS]";
  if (!command.arguments.empty()) absl::StrAppend(&out, " ", command.arguments);
  absl::StrAppend(&out, "\n\n",
                  Wrap(command.summary + " " + command.details, 0));
  if (!command.flags.empty()) {
    absl::StrAppend(&out, "\nFlags:\n", FlagLines(command.flags));
  }
  absl::StrAppend(&out, "\nExamples:\n");
  for (const std::string& example : command.examples) {
    absl::StrAppend(&out, "  ", example, "\n");
  }
  absl::StrAppend(&out,
                  "\nGlobal flags (--endpoints, --output, --timeout, --ca, "
                  "--cert, --key): see `lockctl help`.\n");
  return out;
}

}  // namespace

int Context::Fail(const absl::Status& status, bool acquiring) const {
  const ExitCode code = ExitCodeFor(status, acquiring);
  if (code == kExitUnavailable) {
    return out.Error(
        what,
        absl::Status(
            status.code(),
            absl::StrCat("cell unavailable: no leader answered "
                         "within --timeout (",
                         absl::FormatDuration(client_options.call_timeout),
                         ") at ", absl::StrJoin(client_options.endpoints, ","),
                         ": ", status.message())),
        code);
  }
  return out.Error(what, status, code);
}

int Context::Usage(const std::string& message) const {
  // Only a known command has help of its own.
  const std::string help = FindCommand(args.command) == nullptr
                               ? "lockctl help"
                               : "lockctl help " + args.command;
  return out.Error(
      what.empty() ? "usage" : what,
      absl::InvalidArgumentError(absl::StrCat(message, " (see '", help, "')")),
      kExitUsage);
}

absl::StatusOr<std::unique_ptr<Session>> Context::OpenSession(
    absl::Duration ttl, absl::Duration grace_period,
    std::function<void(const v1::Event&)> on_event) const {
  SessionOptions options;
  options.ttl = ttl;
  options.grace_period = grace_period;
  options.on_event = std::move(on_event);
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  options.client_name =
      absl::StrCat("lockctl ", what, " (", host, " pid ", getpid(), ")");
  return Session::Create(client.get(), options);
}

int Main(int argc, char** argv) {
  Context context;
  // Found first, so that errors in the rest of the command line come in the
  // format asked for.
  context.out = Output(ScanOutputFlag(argc, argv) == "json");
  absl::StatusOr<ParsedArgs> parsed =
      ParseArgs(argc, argv, GlobalFlags(), [](const std::string& name) {
        const Command* command = FindCommand(name);
        return command == nullptr ? nullptr : &command->flags;
      });
  if (!parsed.ok()) {
    // Point to the help of the command the line was for, if it names one.
    for (int i = 1; i < argc; ++i) {
      if (argv[i][0] != '-' && FindCommand(argv[i]) != nullptr) {
        context.args.command = argv[i];
        break;
      }
    }
    return context.Usage(std::string(parsed.status().message()));
  }
  context.args = *std::move(parsed);
  ParsedArgs& args = context.args;
  const std::string output = args.Get("output", "table");
  if (output != "table" && output != "json") {
    return context.Usage("--output must be table or json, not \"" + output +
                         "\"");
  }
  context.out = Output(output == "json");

  if (args.command.empty() || args.command == "help") {
    if (args.command.empty() && !args.Has("help")) {
      if (context.out.json()) return context.Usage("no command given");
      absl::FPrintF(stderr, "%s", GeneralHelp());
      return kExitUsage;
    }
    if (args.positional.empty()) {
      absl::PrintF("%s", GeneralHelp());
      return kExitOk;
    }
    const Command* command = FindCommand(args.positional[0]);
    if (command == nullptr) {
      return context.Usage("unknown command \"" + args.positional[0] + "\"");
    }
    absl::PrintF("%s", CommandHelp(*command));
    return kExitOk;
  }
  const Command* command = FindCommand(args.command);
  if (command == nullptr) {
    return context.Usage("unknown command \"" + args.command + "\"");
  }
  if (args.Has("help")) {
    absl::PrintF("%s", CommandHelp(*command));
    return kExitOk;
  }
  if (!command->runs_command) args.ExecToPositional();
  context.what = args.positional.empty()
                     ? command->name
                     : absl::StrCat(command->name, " ", args.positional[0]);
  if (args.positional.size() < command->min_args ||
      args.positional.size() > command->max_args) {
    return context.Usage(absl::StrCat("expected: lockctl ", command->name, " ",
                                      command->arguments));
  }
  if (args.has_exec && args.exec.empty()) {
    return context.Usage("nothing to run after --");
  }

  const char* env_endpoints = std::getenv("LOCKD_ENDPOINTS");
  const bool from_env = !args.Has("endpoints") && env_endpoints != nullptr &&
                        *env_endpoints != '\0';
  const std::string endpoints = args.Has("endpoints")
                                    ? args.Get("endpoints", "")
                                : from_env ? env_endpoints
                                           : kDefaultEndpoints;
  for (absl::string_view address : absl::StrSplit(endpoints, ',')) {
    address = absl::StripAsciiWhitespace(address);
    if (!address.empty()) {
      context.client_options.endpoints.emplace_back(address);
    }
  }
  if (context.client_options.endpoints.empty()) {
    return context.Usage(from_env ? "$LOCKD_ENDPOINTS lists no address"
                                  : "--endpoints lists no address");
  }
  absl::StatusOr<absl::Duration> timeout =
      args.Duration("timeout", absl::Seconds(30));
  if (!timeout.ok())
    return context.Usage(std::string(timeout.status().message()));
  if (*timeout <= absl::ZeroDuration()) {
    return context.Usage("--timeout must be positive");
  }
  context.client_options.call_timeout = *timeout;
  context.client_options.tls_ca_file = args.Get("ca", "");
  context.client_options.tls_cert_file = args.Get("cert", "");
  context.client_options.tls_key_file = args.Get("key", "");
  context.client_options.attempt_timeout =
      std::min(*timeout, context.client_options.attempt_timeout);

  if (command->handles_signals) BlockSignals();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(context.client_options);
  if (!client.ok())
    return context.Usage(std::string(client.status().message()));
  context.client = *std::move(client);
  return command->run(context);
}

}  // namespace lockd::cli
