#include "tests/integration/cell.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/integration/process.h"

namespace lockd::integration {
namespace {

std::string ErrnoMessage(const std::string& what) {
  return absl::StrCat(what, ": ", std::strerror(errno));
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return absl::StrCat("ended with wait status ", wait_status);
}

std::string TempBase() {
  for (const char* name : {"TEST_TMPDIR", "TMPDIR"}) {
    const char* value = getenv(name);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return "/tmp";
}

std::string DescribeStatus(const v1::StatusResponse& s) {
  return absl::StrCat(
      "role=", s.role(), " leader_id=", s.leader_id(), " epoch=", s.epoch(),
      " has_lease=", s.has_lease(), " commit=", s.commit_index(),
      " applied=", s.applied_index(), " snapshot=", s.snapshot_index());
}

}  // namespace

absl::StatusOr<int> PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(ErrnoMessage("socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::string message = ErrnoMessage("bind 127.0.0.1:0");
    close(fd);
    return absl::InternalError(message);
  }
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::string message = ErrnoMessage("getsockname");
    close(fd);
    return absl::InternalError(message);
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address) {
  return NewChannel(address, "");
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const std::string& ca_file,
                                          const std::string& cert_file,
                                          const std::string& key_file) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (!ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadWholeFile(ca_file);
    if (!cert_file.empty()) {
      ssl.pem_cert_chain = ReadWholeFile(cert_file);
      ssl.pem_private_key = ReadWholeFile(key_file);
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(address, credentials, args);
}

absl::Status MakeCertificates(const std::string& dir,
                              const std::vector<int>& replicas,
                              const std::vector<std::string>& clients) {
  const std::string command =
      absl::StrCat("CERT_REPLICAS='", absl::StrJoin(replicas, " "),
                   "' CERT_CLIENTS='", absl::StrJoin(clients, " "), "' '",
                   LOCKD_SOURCE_DIR, "/dev' certs '", dir, "'");
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("failed: ", command));
  }
  return absl::OkStatus();
}

bool ChannelIsBroken(grpc::Channel& channel, const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE &&
         channel.GetState(/*try_to_connect=*/false) ==
             GRPC_CHANNEL_TRANSIENT_FAILURE;
}

Cell::Cell(CellOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Cell>> Cell::Start(CellOptions options) {
  if (options.lockd_binary.empty()) {
    return absl::InvalidArgumentError("CellOptions.lockd_binary is empty");
  }
  if (access(options.lockd_binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot execute the lockd binary ", options.lockd_binary,
                     " (build the `lockd` target): ", std::strerror(errno)));
  }
  if (options.replicas < 1) {
    return absl::InvalidArgumentError("CellOptions.replicas must be >= 1");
  }
  std::unique_ptr<Cell> cell(new Cell(std::move(options)));
  if (cell->options_.directory.empty()) {
    std::string templ = TempBase() + "/lockd-cell-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) {
      return absl::InternalError(ErrnoMessage("mkdtemp " + templ));
    }
    cell->directory_ = templ;
    cell->owns_directory_ = true;
  } else {
    cell->directory_ = cell->options_.directory;
    std::error_code error;
    std::filesystem::create_directories(cell->directory_, error);
    if (error) {
      return absl::InternalError(absl::StrCat(
          "create directory ", cell->directory_, ": ", error.message()));
    }
  }

  std::set<int> ports;
  auto pick = [&ports]() -> absl::StatusOr<int> {
    while (true) {
      absl::StatusOr<int> picked = PickFreePort();
      if (!picked.ok() || ports.insert(*picked).second) return picked;
    }
  };
  for (int id = 1; id <= cell->options_.replicas; ++id) {
    absl::StatusOr<int> port = pick();
    if (!port.ok()) return port.status();
    absl::StatusOr<int> peer_port = pick();
    if (!peer_port.ok()) return peer_port.status();
    Replica r;
    r.id = id;
    r.port = *port;
    r.peer_port = *peer_port;
    if (cell->options_.metrics) {
      absl::StatusOr<int> metrics_port = pick();
      if (!metrics_port.ok()) return metrics_port.status();
      r.metrics_port = *metrics_port;
    }
    r.data_dir = absl::StrCat(cell->directory_, "/replica-", id);
    r.log_path = absl::StrCat(cell->directory_, "/replica-", id, ".log");
    cell->replicas_.push_back(r);
  }
  {
    absl::MutexLock lock(&cell->channels_mu_);
    for (int id = 1; id <= cell->size(); ++id) {
      cell->channels_.push_back(NewChannel(cell->address(id), cell->CaFile()));
    }
  }
  for (int id = 1; id <= cell->size(); ++id) {
    absl::Status started = cell->StartReplica(id);
    if (!started.ok()) return started;
  }
  return cell;
}

absl::StatusOr<int> Cell::AddReplica() {
  std::set<int> used;
  for (const Replica& r : replicas_) used.insert({r.port, r.peer_port});
  auto pick = [&used]() -> absl::StatusOr<int> {
    while (true) {
      absl::StatusOr<int> picked = PickFreePort();
      if (!picked.ok() || used.insert(*picked).second) return picked;
    }
  };
  absl::StatusOr<int> port = pick();
  if (!port.ok()) return port.status();
  absl::StatusOr<int> peer_port = pick();
  if (!peer_port.ok()) return peer_port.status();
  Replica r;
  r.id = size() + 1;
  r.port = *port;
  r.peer_port = *peer_port;
  if (options_.metrics) {
    absl::StatusOr<int> metrics_port = pick();
    if (!metrics_port.ok()) return metrics_port.status();
    r.metrics_port = *metrics_port;
  }
  r.joiner = true;
  r.data_dir = absl::StrCat(directory_, "/replica-", r.id);
  r.log_path = absl::StrCat(directory_, "/replica-", r.id, ".log");
  replicas_.push_back(r);
  absl::MutexLock lock(&channels_mu_);
  channels_.push_back(NewChannel(address(r.id), CaFile()));
  return r.id;
}

absl::StatusOr<std::unique_ptr<Cell>> Cell::StartWithLeader(
    CellOptions options, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Cell>> cell = Start(std::move(options));
  if (!cell.ok()) return cell.status();
  absl::StatusOr<int> leader = (*cell)->WaitForLeader(timeout);
  if (!leader.ok()) {
    (*cell)->KeepDirectory();
    return absl::Status(
        leader.status().code(),
        absl::StrCat(leader.status().message(), "\n", (*cell)->AllLogTails()));
  }
  return cell;
}

Cell::~Cell() {
  for (Replica& r : replicas_) {
    if (r.pid > 0) {
      kill(r.pid, SIGKILL);
      int wait_status = 0;
      while (waitpid(r.pid, &wait_status, 0) < 0 && errno == EINTR) {
      }
      r.pid = -1;
    }
  }
  if (!owns_directory_) return;
  if (keep_directory_) {
    std::fprintf(stderr, "cell: kept %s (data and replica logs)\n",
                 directory_.c_str());
    return;
  }
  std::error_code error;
  std::filesystem::remove_all(directory_, error);
}

Cell::Replica& Cell::replica(int id) {
  if (id < 1 || id > size()) {
    std::fprintf(stderr, "cell: no replica %d\n", id);
    std::abort();
  }
  return replicas_[id - 1];
}

const Cell::Replica& Cell::replica(int id) const {
  return const_cast<Cell*>(this)->replica(id);
}

std::shared_ptr<grpc::Channel> Cell::channel(int id) const {
  replica(id);  // Checks the id.
  absl::MutexLock lock(&channels_mu_);
  return channels_[id - 1];
}

void Cell::ReplaceBrokenChannel(
    int id, const std::shared_ptr<grpc::Channel>& broken) const {
  absl::MutexLock lock(&channels_mu_);
  if (channels_[id - 1] == broken) {
    channels_[id - 1] = NewChannel(address(id), CaFile());
  }
}

std::string Cell::address(int id) const {
  return absl::StrCat("127.0.0.1:", replica(id).port);
}

std::string Cell::metrics_address(int id) const {
  return absl::StrCat("127.0.0.1:", replica(id).metrics_port);
}

std::string Cell::peer_address(int id) const {
  return absl::StrCat("127.0.0.1:", replica(id).peer_port);
}

std::vector<std::string> Cell::addresses() const {
  std::vector<std::string> result;
  for (int id = 1; id <= size(); ++id) result.push_back(address(id));
  return result;
}

std::string Cell::endpoints() const { return absl::StrJoin(addresses(), ","); }

std::string Cell::members_flag() const {
  std::vector<std::string> members;
  for (int id = 1; id <= size(); ++id) {
    members.push_back(
        absl::StrCat(id, "@", address(id), "/", peer_address(id)));
  }
  return absl::StrJoin(members, ",");
}

absl::Duration Cell::election_timeout() const {
  // The server's defaults (lockd --help) are the ones the harness passes.
  int tick_ms = options_.tick_ms > 0 ? options_.tick_ms : 10;
  int election_ticks =
      options_.election_ticks > 0 ? options_.election_ticks : 30;
  return absl::Milliseconds(tick_ms * election_ticks);
}

pid_t Cell::pid(int id) const { return replica(id).pid; }

void Cell::AppendToLog(const Replica& r, const std::string& line) const {
  std::ofstream log(r.log_path, std::ios::app);
  log << line << "\n";
}

absl::Status Cell::StartReplica(int id) {
  Replica& r = replica(id);
  if (IsRunning(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("replica ", id, " runs already (pid ", r.pid, ")"));
  }
  std::error_code error;
  std::filesystem::create_directories(r.data_dir, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("create ", r.data_dir, ": ", error.message()));
  }

  std::vector<std::string> args = {
      options_.lockd_binary,
      absl::StrCat("--id=", id),
      absl::StrCat("--members=", members_flag()),
      absl::StrCat("--data_dir=", r.data_dir),
  };
  auto add_flag = [&args](const char* name, int value) {
    if (value > 0) args.push_back(absl::StrCat("--", name, "=", value));
  };
  add_flag("tick_ms", options_.tick_ms);
  add_flag("heartbeat_ticks", options_.heartbeat_ticks);
  add_flag("election_ticks", options_.election_ticks);
  add_flag("snapshot_interval", options_.snapshot_interval);
  add_flag("checkpoint_interval_ms", options_.checkpoint_interval_ms);
  if (r.metrics_port > 0) {
    args.push_back(
        absl::StrCat("--metrics_address=127.0.0.1:", r.metrics_port));
  }
  if (r.starts == 0) args.push_back(r.joiner ? "--join" : "--bootstrap");
  for (const std::string& flag : options_.extra_flags) args.push_back(flag);
  if (!options_.tls_dir.empty()) {
    const std::string certs = absl::StrCat(options_.tls_dir, "/replica-", id);
    args.push_back(absl::StrCat("--tls_ca=", CaFile()));
    args.push_back(absl::StrCat("--tls_cert=", certs, ".pem"));
    args.push_back(absl::StrCat("--tls_key=", certs, ".key"));
    args.push_back(absl::StrCat("--client_ca=", CaFile()));
  }

  ++r.starts;
  AppendToLog(r, absl::StrCat("=== cell: start #", r.starts, " of replica ", id,
                              ": ", absl::StrJoin(args, " ")));
  ProcessOptions process;
  process.argv = args;
  process.output_path = r.log_path;
  process.append = true;
  absl::StatusOr<pid_t> pid = StartProcess(process);
  if (!pid.ok()) return pid.status();
  r.pid = *pid;
  return absl::OkStatus();
}

bool Cell::WaitForExit(Replica& r, absl::Time deadline, int* wait_status) {
  return WaitForProcess(r.pid, deadline, wait_status);
}

absl::Status Cell::Kill(int id) {
  Replica& r = replica(id);
  if (!IsRunning(id)) return absl::OkStatus();
  if (kill(r.pid, SIGKILL) != 0) {
    return absl::InternalError(ErrnoMessage(absl::StrCat("kill ", r.pid)));
  }
  int wait_status = 0;
  while (waitpid(r.pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  AppendToLog(r, absl::StrCat("=== cell: replica ", id, " (pid ", r.pid,
                              ") killed with SIGKILL"));
  r.pid = -1;
  return absl::OkStatus();
}

absl::Status Cell::Stop(int id, absl::Duration timeout) {
  Replica& r = replica(id);
  if (!IsRunning(id)) return absl::OkStatus();
  if (kill(r.pid, SIGTERM) != 0) {
    return absl::InternalError(ErrnoMessage(absl::StrCat("kill ", r.pid)));
  }
  int wait_status = 0;
  if (!WaitForExit(r, absl::Now() + timeout, &wait_status)) {
    kill(r.pid, SIGKILL);
    while (waitpid(r.pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
    AppendToLog(r, absl::StrCat("=== cell: replica ", id, " (pid ", r.pid,
                                ") ignored SIGTERM for ",
                                absl::FormatDuration(timeout), "; killed"));
    r.pid = -1;
    return absl::DeadlineExceededError(
        absl::StrCat("replica ", id, " did not exit within ",
                     absl::FormatDuration(timeout), " of SIGTERM"));
  }
  std::string how = DescribeWaitStatus(wait_status);
  AppendToLog(r, absl::StrCat("=== cell: replica ", id, " (pid ", r.pid,
                              ") stopped with SIGTERM: ", how));
  r.pid = -1;
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) {
    return absl::OkStatus();
  }
  return absl::InternalError(
      absl::StrCat("replica ", id, " after SIGTERM: ", how));
}

absl::Status Cell::Pause(int id) {
  Replica& r = replica(id);
  if (!IsRunning(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("replica ", id, " is not running"));
  }
  if (kill(r.pid, SIGSTOP) != 0) {
    return absl::InternalError(ErrnoMessage(absl::StrCat("SIGSTOP ", r.pid)));
  }
  // SIGSTOP takes effect asynchronously; wait until the process is stopped.
  siginfo_t info{};
  if (waitid(P_PID, r.pid, &info, WSTOPPED | WNOWAIT) != 0) {
    return absl::InternalError(ErrnoMessage("waitid"));
  }
  AppendToLog(r, absl::StrCat("=== cell: replica ", id, " (pid ", r.pid,
                              ") paused with SIGSTOP"));
  return absl::OkStatus();
}

absl::Status Cell::Resume(int id) {
  Replica& r = replica(id);
  if (r.pid <= 0 || kill(r.pid, SIGCONT) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot SIGCONT replica ", id, " (pid ", r.pid, ")"));
  }
  AppendToLog(r, absl::StrCat("=== cell: replica ", id, " (pid ", r.pid,
                              ") resumed with SIGCONT"));
  return absl::OkStatus();
}

absl::Status Cell::Restart(int id, bool kill) {
  absl::Status stopped = kill ? Kill(id) : Stop(id);
  if (!stopped.ok()) return stopped;
  return StartReplica(id);
}

bool Cell::IsRunning(int id) {
  Replica& r = replica(id);
  if (r.pid <= 0) return false;
  int wait_status = 0;
  pid_t got = waitpid(r.pid, &wait_status, WNOHANG);
  if (got == 0) return true;
  std::string line =
      absl::StrCat("=== cell: replica ", id, " (pid ", r.pid,
                   ") exited on its own: ", DescribeWaitStatus(wait_status));
  AppendToLog(r, line);
  std::fprintf(stderr, "%s\n", line.c_str());
  r.pid = -1;
  return false;
}

std::vector<int> Cell::RunningReplicas() {
  std::vector<int> running;
  for (int id = 1; id <= size(); ++id) {
    if (IsRunning(id)) running.push_back(id);
  }
  return running;
}

absl::StatusOr<v1::StatusResponse> Cell::Status(int id,
                                                absl::Duration timeout) const {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::StatusResponse response;
  std::shared_ptr<grpc::Channel> to_replica = channel(id);
  grpc::Status status = v1::Cluster::NewStub(to_replica)
                            ->Status(&context, v1::StatusRequest(), &response);
  if (!status.ok()) {
    if (ChannelIsBroken(*to_replica, status)) {
      ReplaceBrokenChannel(id, to_replica);
    }
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Cluster.Status of replica ", id, ": ",
                                     status.error_message()));
  }
  return response;
}

absl::StatusOr<bool> Cell::Serving(int id, absl::Duration timeout) const {
  // There are no generated stubs of grpc.health.v1 in Debian's gRPC, and the
  // messages are tiny: HealthCheckRequest{service: ""} encodes to nothing,
  // HealthCheckResponse{status: SERVING} to 08 01.
  grpc::GenericStub stub(channel(id));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::Slice nothing("");
  grpc::ByteBuffer request(&nothing, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &request, &response,
                 [&done](grpc::Status status) { done.set_value(status); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Health.Check of replica ", id, ": ",
                                     status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) {
    return absl::InternalError("cannot read the Health.Check response");
  }
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes == std::string("\x08\x01", 2);
}

absl::StatusOr<int> Cell::WaitForLeader(absl::Duration timeout,
                                        std::vector<int> among) const {
  if (among.empty()) {
    for (int id = 1; id <= size(); ++id) among.push_back(id);
  }
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::string> last(among.size());
  while (true) {
    int leader = 0;
    bool disagreement = false;
    std::vector<v1::StatusResponse> answers;
    for (size_t i = 0; i < among.size(); ++i) {
      absl::StatusOr<v1::StatusResponse> status = Status(among[i]);
      if (!status.ok()) {
        last[i] = status.status().ToString();
        continue;
      }
      last[i] = DescribeStatus(*status);
      answers.push_back(*status);
      if (status->role() == "leader" && status->has_lease()) {
        if (leader != 0) disagreement = true;
        leader = among[i];
      }
    }
    if (leader != 0 && !disagreement) {
      bool agreed = true;
      for (const v1::StatusResponse& answer : answers) {
        if (answer.leader_id() != 0 &&
            answer.leader_id() != static_cast<uint32_t>(leader)) {
          agreed = false;
        }
      }
      if (agreed) return leader;
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::string report;
  for (size_t i = 0; i < among.size(); ++i) {
    absl::StrAppend(&report, "\n  replica ", among[i], ": ", last[i]);
    // Without reaping (this is const): did the process end?
    const pid_t pid = replica(among[i]).pid;
    siginfo_t info{};
    if (pid > 0 &&
        waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid) {
      absl::StrAppend(&report, " [process ended: ",
                      info.si_code == CLD_EXITED
                          ? absl::StrCat("exit status ", info.si_status)
                          : absl::StrCat("signal ", info.si_status),
                      "]");
    } else if (pid <= 0) {
      absl::StrAppend(&report, " [not running]");
    }
  }
  return absl::DeadlineExceededError(
      absl::StrCat("no agreed leader with a lease within ",
                   absl::FormatDuration(timeout), report));
}

absl::Status Cell::WaitForApplied(int id, uint64_t index,
                                  absl::Duration timeout) const {
  std::string last = "no answer";
  bool reached = PollUntil(
      [&] {
        absl::StatusOr<v1::StatusResponse> status = Status(id);
        if (!status.ok()) {
          last = status.status().ToString();
          return false;
        }
        last = DescribeStatus(*status);
        return status->applied_index() >= index;
      },
      timeout);
  if (reached) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("replica ", id, " did not apply index ", index, " within ",
                   absl::FormatDuration(timeout), "; last: ", last));
}

std::string Cell::LogTail(int id, int lines) const {
  const Replica& r = replica(id);
  std::ifstream in(r.log_path, std::ios::binary);
  if (!in) return "(no log " + r.log_path + ")";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff window = 64 * 1024;
  in.seekg(std::max<std::streamoff>(0, size - window));
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  std::vector<std::string> all = absl::StrSplit(text, '\n');
  if (!all.empty() && all.back().empty()) all.pop_back();
  size_t first = all.size() > static_cast<size_t>(lines)
                     ? all.size() - static_cast<size_t>(lines)
                     : 0;
  std::vector<std::string> tail(all.begin() + first, all.end());
  return absl::StrJoin(tail, "\n");
}

std::string Cell::AllLogTails(int lines) const {
  std::string result;
  for (int id = 1; id <= size(); ++id) {
    absl::StrAppend(&result, "----- ", replica(id).log_path, " (last ", lines,
                    " lines) -----\n", LogTail(id, lines), "\n");
  }
  return result;
}

}  // namespace lockd::integration
