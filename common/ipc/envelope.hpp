// IPC envelope codec: pure functions, no I/O, fuzzed (tests/fuzz/ipc_envelope_fuzz.cpp).
//
// Wire form: one msgpack map with exactly these four keys (any order):
//   "ipc_version": uint16   must equal kIpcVersion
//   "type":        uint16   a MsgType this build knows
//   "request_id":  uint64   0 = not a request/reply; a FooReply echoes its FooRequest's id
//   "body":        bin      the payload, itself a msgpack map (see messages.hpp)
// The body is kept as raw bytes so the receiver can check policy (type,
// sender, size) before decoding it, and decode it only in the handler.
//
// Every decode is of untrusted bytes: msgpack runs with an unpack_limit, every
// msgpack exception becomes an Error, and nothing throws out of this API.
// Included by every process, at any privilege.
#pragma once

#include <msgpack.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/ipc/messages.hpp"
#include "common/util/bytes.hpp"
#include "common/util/result.hpp"

namespace derpd::ipc {

// Largest body any policy row allows (policy.hpp asserts this) and the
// envelope's own overhead: map(1) + 4 keys (~40) + 3 ints (<=17) + bin32 header(5).
inline constexpr size_t kMaxBodyBytes = 1024 * 1024;
inline constexpr size_t kEnvelopeOverhead = 128;
inline constexpr size_t kMaxEnvelopeBytes = kMaxBodyBytes + kEnvelopeOverhead;

// msgpack unpack_limit settings. Sizes are element counts (array, map) or
// bytes (str, bin, ext); depth counts nested containers, the root being 1.
struct DecodeLimits {
  size_t maxInputBytes = kMaxEnvelopeBytes;
  size_t maxArray = 4096;
  size_t maxMap = 64;
  size_t maxStr = 4096;
  size_t maxBin = kMaxBodyBytes;
  size_t maxExt = 0;  // no ext types in IPC
  size_t maxDepth = 8;
};

// For the envelope itself: one flat map of four entries.
inline constexpr DecodeLimits kEnvelopeLimits{kMaxEnvelopeBytes, 0, 4, 32, kMaxBodyBytes, 0, 1};
// For payload bodies.
inline constexpr DecodeLimits kBodyLimits{};

struct Envelope {
  uint16_t ipcVersion = kIpcVersion;
  MsgType type = MsgType::Hello;
  uint64_t requestId = 0;
  Bytes body;  // msgpack map bytes; root checked to be a map by decodeEnvelope
};

// Builds an envelope around an already-encoded body. Never throws.
Bytes encodeEnvelope(MsgType type, uint64_t requestId, ByteView body,
                     uint16_t ipcVersion = kIpcVersion);

// The body bytes of `msg` (a msgpack map).
template <typename T>
Bytes encodeBody(const T& msg) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, msg);
  const auto* p = reinterpret_cast<const uint8_t*>(buf.data());
  return Bytes(p, p + buf.size());
}

// One whole envelope carrying `msg`.
template <typename T>
Bytes encode(const T& msg, uint64_t requestId = 0) {
  return encodeEnvelope(T::kType, requestId, encodeBody(msg));
}

// Parses and validates an envelope: size, msgpack limits, exact key set and
// types, ipc_version == kIpcVersion, known type, body root is a map.
Result<Envelope> decodeEnvelope(ByteView data, const DecodeLimits& limits = kEnvelopeLimits);

namespace detail {
// Unpacks `body` under `limits`; the root must be a map and fill all of `body`.
Result<msgpack::object_handle> unpackBody(ByteView body, const DecodeLimits& limits);
std::string typeMismatch(MsgType want, MsgType got);
}  // namespace detail

// Decodes the payload of `env` as T; env.type must be T::kType. Missing keys
// keep their defaults and unknown keys are ignored; a key of the wrong type or
// an unknown enum name is an error.
template <typename T>
Result<T> decodeBody(const Envelope& env, const DecodeLimits& limits = kBodyLimits) {
  if (env.type != T::kType) return makeError(detail::typeMismatch(T::kType, env.type));
  auto oh = detail::unpackBody(env.body, limits);
  if (!oh.ok()) return std::move(oh).takeError();
  try {
    T out{};
    oh->get().convert(out);
    return out;
  } catch (const std::exception& e) {
    return makeError(std::string("decode ") + std::string(msgTypeName(T::kType)) + ": " + e.what());
  } catch (...) {
    return makeError(std::string("decode ") + std::string(msgTypeName(T::kType)) + ": unknown error");
  }
}

}  // namespace derpd::ipc
