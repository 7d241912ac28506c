#include "common/ipc/envelope.hpp"

#include <array>
#include <string_view>

namespace derpd::ipc {
namespace {

constexpr std::string_view kKeyVersion = "ipc_version";
constexpr std::string_view kKeyType = "type";
constexpr std::string_view kKeyRequestId = "request_id";
constexpr std::string_view kKeyBody = "body";

template <typename Stream>
void packKey(msgpack::packer<Stream>& pk, std::string_view k) {
  pk.pack_str(static_cast<uint32_t>(k.size()));
  pk.pack_str_body(k.data(), static_cast<uint32_t>(k.size()));
}

// msgpack map markers: fixmap 0x80..0x8f, map16 0xde, map32 0xdf.
bool startsWithMap(ByteView b) {
  return !b.empty() && ((b[0] & 0xf0) == 0x80 || b[0] == 0xde || b[0] == 0xdf);
}

Result<msgpack::object_handle> unpackRoot(ByteView data, const DecodeLimits& lim,
                                          std::string_view what) {
  if (data.empty()) return makeError(std::string(what) + ": empty");
  if (data.size() > lim.maxInputBytes) {
    return makeError(std::string(what) + ": " + std::to_string(data.size()) + " bytes > limit " +
                     std::to_string(lim.maxInputBytes));
  }
  try {
    const msgpack::unpack_limit limit(lim.maxArray, lim.maxMap, lim.maxStr, lim.maxBin,
                                      lim.maxExt, lim.maxDepth);
    std::size_t off = 0;
    msgpack::object_handle oh = msgpack::unpack(reinterpret_cast<const char*>(data.data()),
                                                data.size(), off, nullptr, nullptr, limit);
    if (off != data.size()) {
      return makeError(std::string(what) + ": " + std::to_string(data.size() - off) +
                       " trailing bytes");
    }
    if (oh.get().type != msgpack::type::MAP) {
      return makeError(std::string(what) + ": root is not a map");
    }
    return oh;
  } catch (const std::exception& e) {
    return makeError(std::string(what) + ": " + e.what());
  } catch (...) {
    return makeError(std::string(what) + ": unknown msgpack error");
  }
}

}  // namespace

Bytes encodeEnvelope(MsgType type, uint64_t requestId, ByteView body, uint16_t ipcVersion) {
  msgpack::sbuffer buf(body.size() + kEnvelopeOverhead);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(4);
  packKey(pk, kKeyVersion);
  pk.pack_uint16(ipcVersion);
  packKey(pk, kKeyType);
  pk.pack_uint16(static_cast<uint16_t>(type));
  packKey(pk, kKeyRequestId);
  pk.pack_uint64(requestId);
  packKey(pk, kKeyBody);
  pk.pack_bin(static_cast<uint32_t>(body.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(body.data()), static_cast<uint32_t>(body.size()));
  const auto* p = reinterpret_cast<const uint8_t*>(buf.data());
  return Bytes(p, p + buf.size());
}

Result<Envelope> decodeEnvelope(ByteView data, const DecodeLimits& limits) {
  auto oh = unpackRoot(data, limits, "envelope");
  if (!oh.ok()) return std::move(oh).takeError();
  const msgpack::object& root = oh->get();
  const msgpack::object_map& m = root.via.map;
  if (m.size != 4) return makeError("envelope: " + std::to_string(m.size) + " keys, want 4");

  // Each value is read only after its key and type are checked, so nothing
  // here can throw.
  std::array<bool, 4> seen{};
  uint64_t version = 0, type = 0, requestId = 0;
  ByteView body;
  for (uint32_t i = 0; i < m.size; ++i) {
    const msgpack::object& k = m.ptr[i].key;
    const msgpack::object& v = m.ptr[i].val;
    if (k.type != msgpack::type::STR) return makeError("envelope: non-string key");
    const std::string_view key(k.via.str.ptr, k.via.str.size);
    size_t idx;
    if (key == kKeyVersion) {
      idx = 0;
    } else if (key == kKeyType) {
      idx = 1;
    } else if (key == kKeyRequestId) {
      idx = 2;
    } else if (key == kKeyBody) {
      idx = 3;
    } else {
      return makeError("envelope: unknown key");
    }
    if (seen[idx]) return makeError("envelope: duplicate key " + std::string(key));
    seen[idx] = true;
    if (idx == 3) {
      if (v.type != msgpack::type::BIN) return makeError("envelope: body is not bin");
      body = ByteView(reinterpret_cast<const uint8_t*>(v.via.bin.ptr), v.via.bin.size);
      continue;
    }
    if (v.type != msgpack::type::POSITIVE_INTEGER) {
      return makeError("envelope: " + std::string(key) + " is not an unsigned integer");
    }
    (idx == 0 ? version : idx == 1 ? type : requestId) = v.via.u64;
  }
  if (version > 0xffff || type > 0xffff) return makeError("envelope: version or type out of range");
  if (version != kIpcVersion) {
    return makeError("envelope: ipc_version " + std::to_string(version) + ", want " +
                     std::to_string(kIpcVersion));
  }
  if (!isKnownMsgType(static_cast<uint16_t>(type))) {
    return makeError("envelope: unknown type " + msgTypeName(static_cast<uint16_t>(type)));
  }
  if (!startsWithMap(body)) return makeError("envelope: body root is not a map");

  Envelope env;
  env.ipcVersion = static_cast<uint16_t>(version);
  env.type = static_cast<MsgType>(type);
  env.requestId = requestId;
  env.body.assign(body.begin(), body.end());
  return env;
}

namespace detail {

Result<msgpack::object_handle> unpackBody(ByteView body, const DecodeLimits& limits) {
  return unpackRoot(body, limits, "body");
}

std::string typeMismatch(MsgType want, MsgType got) {
  return "body: envelope type " + msgTypeName(static_cast<uint16_t>(got)) + ", want " +
         std::string(msgTypeName(want));
}

}  // namespace detail
}  // namespace derpd::ipc
