#ifndef LOCKD_SESSIONS_LIMITS_H_
#define LOCKD_SESSIONS_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace lockd::sessions {

// Limits the state machine enforces; a request beyond one is refused with
// RESOURCE_EXHAUSTED (counts) or INVALID_ARGUMENT (sizes) naming the limit.
// Every replica of a cell must use the same values: they decide results.
struct Limits {
  size_t max_path_bytes = 1024;
  size_t max_path_depth = 32;
  size_t max_name_bytes = 255;
  size_t max_content_bytes = 64 << 10;
  size_t max_nodes = 1000000;
  size_t max_children_per_node = 100000;
  size_t max_sessions = 100000;
  size_t max_ephemeral_nodes_per_session = 1000;
  size_t max_watches_per_session = 1000;
  size_t max_waiters_per_lock = 10000;
  size_t max_events_per_session = 1024;
  // Recorded answers kept per session (requests at or above the client's
  // first_unanswered_request_id, plus parked ones).
  size_t max_retained_results_per_session = 1024;
  size_t max_client_name_bytes = 256;
  int64_t min_ttl_ms = 1000;
  int64_t default_ttl_ms = 10000;
  int64_t max_ttl_ms = 3600000;
  int64_t max_wait_timeout_ms = 3600000;
  int64_t max_lock_delay_ms = 60000;

  // Bounds of one answer of the operators' listings (ListSessions,
  // ListLocks), which are reads: they refuse nothing, they stop listing and
  // set `truncated`. Entries per answer, and serialized bytes of the entries
  // (below gRPC's default 4 MiB receive limit; with the defaults above any
  // single entry fits).
  size_t max_list_entries = 10000;
  size_t max_list_bytes = 2 << 20;
  // Lock paths listed per session (SessionInfo.num_locks has the count).
  size_t max_listed_locks_per_session = 100;
};

}  // namespace lockd::sessions

#endif  // LOCKD_SESSIONS_LIMITS_H_
