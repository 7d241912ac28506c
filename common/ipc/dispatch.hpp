// Static handler tables for IPC messages (STYLE.md §2): {MsgType, handler}.
// A type with no row is a peer fault, never silently ignored.
//
//   Result<void> Worker::onReload(Role from, const ipc::Reload& msg);
//   constexpr std::array kHandlers = {ipc::handlerFor<&Worker::onReload>(),
//                                     ipc::handlerFor<&Worker::onShutdown>()};
//   static_assert(ipc::uniqueTypes(kHandlers));
//   channel.poll([&](Role from, const ipc::Envelope& env) {
//     return ipc::dispatch(worker, kHandlers, from, env);
//   });
//
// The body is decoded (decodeBody<Msg>) before the member runs; a decode
// failure is returned, i.e. a peer fault. Channel checks policy before this.
// No I/O: handlers can be tested without a Channel.
// Included by every process, at any privilege.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "common/ipc/envelope.hpp"
#include "common/ipc/messages.hpp"
#include "common/ipc/role.hpp"
#include "common/util/result.hpp"

namespace derpd::ipc {

template <typename Owner>
using HandlerFn = Result<void> (*)(Owner&, Role from, const Envelope&);

template <typename Owner>
struct HandlerEntry {
  MsgType type;
  HandlerFn<Owner> fn;
};

namespace detail {
template <typename F>
struct MemberHandler;
template <typename O, typename M>
struct MemberHandler<Result<void> (O::*)(Role, const M&)> {
  using Owner = O;
  using Msg = M;
};
}  // namespace detail

// A table row for `Result<void> Owner::onFoo(Role from, const Foo&)`; the type
// comes from Foo::kType, so a row cannot name the wrong payload.
template <auto Fn>
constexpr HandlerEntry<typename detail::MemberHandler<decltype(Fn)>::Owner> handlerFor() {
  using Traits = detail::MemberHandler<decltype(Fn)>;
  using Owner = typename Traits::Owner;
  using Msg = typename Traits::Msg;
  return {Msg::kType, [](Owner& owner, Role from, const Envelope& env) -> Result<void> {
            auto msg = decodeBody<Msg>(env);
            if (!msg.ok()) return std::move(msg).takeError();
            return (owner.*Fn)(from, *msg);
          }};
}

template <typename Owner, size_t N>
constexpr bool uniqueTypes(const std::array<HandlerEntry<Owner>, N>& table) {
  for (size_t i = 0; i < N; ++i) {
    for (size_t j = i + 1; j < N; ++j) {
      if (table[i].type == table[j].type) return false;
    }
  }
  return true;
}

// Runs the row for env.type; an error (no row, undecodable body, or the
// handler's own) is a peer fault for the caller.
template <typename Owner, size_t N>
Result<void> dispatch(Owner& owner, const std::array<HandlerEntry<Owner>, N>& table, Role from,
                      const Envelope& env) {
  for (const HandlerEntry<Owner>& e : table) {
    if (e.type == env.type) return e.fn(owner, from, env);
  }
  return makeError("no handler for " + msgTypeName(static_cast<uint16_t>(env.type)) + " from " +
                   std::string(roleName(from)));
}

}  // namespace derpd::ipc
