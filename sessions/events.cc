// Events: the per-session buffers that KeepAlive delivers.

#include <utility>

#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

void StateMachine::Impl::Emit(uint64_t session_id, v1::Event event) {
  Session& session = sessions_.at(session_id);
  event.set_sequence(session.next_event_sequence++);
  event.set_time_ms(now_ms_);
  session.events.push_back(std::move(event));
  while (session.events.size() > limits_.max_events_per_session) {
    session.events.pop_front();
    ++session.events_lost;
  }
  sessions_with_events_.insert(session_id);
}

void StateMachine::Impl::EmitToWatchers(const Node& node, v1::Event::Type type,
                                        absl::string_view path) {
  for (uint64_t session_id : node.watchers) {
    Emit(session_id, MakeEvent(type, path));
  }
}

}  // namespace lockd::sessions
