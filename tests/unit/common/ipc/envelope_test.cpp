#include "common/ipc/envelope.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <tuple>

#include "common/ipc/messages.hpp"
#include "common/ipc/role.hpp"

namespace derpd::ipc {
namespace {

Metric metric(std::string name, double v, MetricType t, std::string labels = "") {
  return Metric{std::move(name), std::move(labels), v, t};
}

Hello sample(Hello*) { return Hello{Role::StunWorker, "0.1.0+abc123", kIpcVersion}; }
Reload sample(Reload*) { return Reload{}; }
Shutdown sample(Shutdown*) { return Shutdown{30000}; }
LogReopen sample(LogReopen*) { return LogReopen{}; }
Ready sample(Ready*) { return Ready{4242}; }
MetricsReport sample(MetricsReport*) {
  return MetricsReport{{metric("accepts", 12, MetricType::Counter),
                        metric("derpd_stun_requests", 3.5, MetricType::Gauge, "family=\"ipv6\"")}};
}
MetricsSnapshotRequest sample(MetricsSnapshotRequest*) { return MetricsSnapshotRequest{1234, {17, 0, 99999}}; }
CertUpdate sample(CertUpdate*) {
  return CertUpdate{"-----BEGIN CERTIFICATE-----\n...", "-----BEGIN PRIVATE KEY-----\n...", "1D3A5", 1795000000,
                    "manual /etc/derpd/certs/derp.example.com.crt"};
}
AcmeChallenge sample(AcmeChallenge*) {
  return AcmeChallenge{true, "tls-alpn-01", "derp.example.com", "tok-en_1", "", "CERT", "KEY"};
}
AcmeChallengeReady sample(AcmeChallengeReady*) { return AcmeChallengeReady{"tok-en_1", false, "bad key"}; }
ManualCertFiles sample(ManualCertFiles*) {
  return ManualCertFiles{"reload",
                         ManualCertFile{"/etc/letsencrypt/live/derp.example.com/derp.example.com.crt",
                                        "-----BEGIN CERTIFICATE-----\n...", false, ""},
                         ManualCertFile{"/etc/letsencrypt/live/derp.example.com/derp.example.com.key", "", false,
                                        "Permission denied"}};
}
ManualCertFilesRequest sample(ManualCertFilesRequest*) { return ManualCertFilesRequest{"certificate files changed"}; }
VerifyRequest sample(VerifyRequest*) {
  return VerifyRequest{77, "nodekey:" + std::string(64, 'a'), "2001:db8::1"};
}
VerifyReply sample(VerifyReply*) { return VerifyReply{77, "deny", "admission controller: 500 Internal Server Error"}; }
MeshPeers sample(MeshPeers*) {
  return MeshPeers{{MeshPeer{"derp2.example.com", {"192.0.2.2:443", "[2001:db8::2]:443"}, ""},
                    MeshPeer{"derp3.example.com:8443", {}, "no such host"}}};
}
MetricsSnapshotReply sample(MetricsSnapshotReply*) {
  return MetricsSnapshotReply{{RoleMetrics{Role::Supervisor,
                                           {metric("derpd_role_up", 1, MetricType::Gauge,
                                                   "role=\"stun-worker\"")}},
                               RoleMetrics{Role::StunWorker, sample((MetricsReport*)nullptr).metrics},
                               RoleMetrics{Role::Monitor, {}}}};
}

template <typename T>
void roundTrip() {
  SCOPED_TRACE(std::string(msgTypeName(T::kType)));
  const T msg = sample(static_cast<T*>(nullptr));
  const Bytes wire = encode(msg, 0x1122334455667788ull);
  auto env = decodeEnvelope(wire);
  ASSERT_TRUE(env.ok()) << env.error();
  EXPECT_EQ(env->ipcVersion, kIpcVersion);
  EXPECT_EQ(env->type, T::kType);
  EXPECT_EQ(env->requestId, 0x1122334455667788ull);
  EXPECT_EQ(env->body, encodeBody(msg));
  auto back = decodeBody<T>(*env);
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_EQ(*back, msg);
  // Every prefix is truncated and must fail cleanly.
  for (size_t n = 0; n < wire.size(); ++n) {
    EXPECT_FALSE(decodeEnvelope(ByteView(wire.data(), n)).ok()) << n;
  }
  // A truncated body (re-wrapped in a valid envelope) fails in decodeBody.
  for (size_t n = 1; n < env->body.size(); ++n) {
    Envelope cut = *env;
    cut.body.resize(n);
    EXPECT_FALSE(decodeBody<T>(cut).ok()) << n;
  }
}

TEST(IpcEnvelope, RoundTripEveryMessage) {
  std::apply([](auto... m) { (roundTrip<decltype(m)>(), ...); }, AllMessages{});
}

TEST(IpcEnvelope, KnownBytes) {
  // {"ipc_version":1,"type":0x0101,"request_id":0,"body":bin{"drain_deadline_ms":5}}
  const Bytes wire = encode(Shutdown{5});
  const std::string hex = toHex(wire);
  EXPECT_EQ(hex,
            "84"                                  // map(4)
            "ab6970635f76657273696f6e" "01"       // "ipc_version": 1
            "a474797065" "cd0101"                 // "type": 0x0101
            "aa726571756573745f6964" "00"         // "request_id": 0
            "a4626f6479" "c414"                   // "body": bin8(20)
            "81" "b1647261696e5f646561646c696e655f6d73" "05");  // {"drain_deadline_ms":5}
}

TEST(IpcEnvelope, NamesOnTheWire) {
  auto env = decodeEnvelope(encode(sample((MetricsSnapshotReply*)nullptr)));
  ASSERT_TRUE(env.ok());
  const std::string body(env->body.begin(), env->body.end());
  EXPECT_NE(body.find("stun-worker"), std::string::npos);
  EXPECT_NE(body.find("counter"), std::string::npos);
  EXPECT_NE(body.find("gauge"), std::string::npos);
}

// Packs a map from (key, packer fn) pairs.
Bytes packMap(std::initializer_list<std::pair<std::string, std::function<void(msgpack::packer<msgpack::sbuffer>&)>>> kvs) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(kvs.size()));
  for (const auto& [k, f] : kvs) {
    pk.pack(k);
    f(pk);
  }
  const auto* p = reinterpret_cast<const uint8_t*>(buf.data());
  return Bytes(p, p + buf.size());
}

auto u(uint64_t v) {
  return [v](msgpack::packer<msgpack::sbuffer>& pk) { pk.pack_uint64(v); };
}
auto bin(Bytes b) {
  return [b](msgpack::packer<msgpack::sbuffer>& pk) {
    pk.pack_bin(static_cast<uint32_t>(b.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
  };
}
auto str(std::string s) {
  return [s](msgpack::packer<msgpack::sbuffer>& pk) { pk.pack(s); };
}

const Bytes kEmptyMap = {0x80};

void expectFail(const Bytes& wire, const std::string& want) {
  auto r = decodeEnvelope(wire);
  ASSERT_FALSE(r.ok()) << toHex(wire);
  EXPECT_NE(r.error().find(want), std::string::npos) << r.error();
}

TEST(IpcEnvelope, HandBuiltIsAccepted) {
  // Any key order is fine.
  auto r = decodeEnvelope(packMap({{"body", bin(kEmptyMap)},
                                   {"request_id", u(9)},
                                   {"type", u(0x0100)},
                                   {"ipc_version", u(1)}}));
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->type, MsgType::Reload);
  EXPECT_EQ(r->requestId, 9u);
}

TEST(IpcEnvelope, RejectsWrongVersion) {
  expectFail(encodeEnvelope(MsgType::Hello, 0, encodeBody(Hello{}), 2), "ipc_version 2, want 1");
  expectFail(encodeEnvelope(MsgType::Hello, 0, encodeBody(Hello{}), 0), "ipc_version 0");
  expectFail(packMap({{"ipc_version", u(0x10001)}, {"type", u(1)}, {"request_id", u(0)},
                      {"body", bin(kEmptyMap)}}),
             "out of range");
}

TEST(IpcEnvelope, RejectsUnknownType) {
  expectFail(encodeEnvelope(static_cast<MsgType>(0x7777), 0, kEmptyMap), "unknown type unknown(0x7777)");
  expectFail(encodeEnvelope(static_cast<MsgType>(0), 0, kEmptyMap), "unknown type");
}

TEST(IpcEnvelope, RejectsBadShape) {
  // Missing key, extra key, duplicate key, unknown key, non-string key.
  expectFail(packMap({{"ipc_version", u(1)}, {"type", u(1)}, {"body", bin(kEmptyMap)}}), "3 keys");
  expectFail(packMap({{"ipc_version", u(1)}, {"type", u(1)}, {"request_id", u(0)},
                      {"body", bin(kEmptyMap)}, {"x", u(0)}}),
             "envelope:");
  expectFail(packMap({{"ipc_version", u(1)}, {"type", u(1)}, {"type", u(1)}, {"body", bin(kEmptyMap)}}),
             "duplicate key type");
  expectFail(packMap({{"ipc_version", u(1)}, {"typo", u(1)}, {"request_id", u(0)},
                      {"body", bin(kEmptyMap)}}),
             "unknown key");
  expectFail({0x84, 0x01, 0x01, 0x02, 0x02, 0x03, 0x03, 0x04, 0x04}, "non-string key");
  // Wrong value types.
  expectFail(packMap({{"ipc_version", str("1")}, {"type", u(1)}, {"request_id", u(0)},
                      {"body", bin(kEmptyMap)}}),
             "ipc_version is not an unsigned integer");
  expectFail(packMap({{"ipc_version", u(1)}, {"type", u(1)}, {"request_id", u(0)},
                      {"body", str("\x80")}}),
             "body is not bin");
  // Body root is not a map (or empty).
  expectFail(encodeEnvelope(MsgType::Reload, 0, Bytes{0x90}), "body root is not a map");
  expectFail(encodeEnvelope(MsgType::Reload, 0, Bytes{}), "body root is not a map");
  // Root is not a map.
  expectFail({0x93, 0x01, 0x01, 0x00}, "array size overflow");  // arrays are not allowed at all
  expectFail({0xc0}, "root is not a map");
  // Trailing bytes after a valid envelope.
  Bytes wire = encode(Reload{});
  wire.push_back(0xc0);
  expectFail(wire, "1 trailing bytes");
}

TEST(IpcEnvelope, RejectsGarbageAndHugeHeaders) {
  expectFail({}, "empty");
  expectFail({0xc1}, "envelope:");                               // never-used byte
  expectFail({0xdf, 0xff, 0xff, 0xff, 0xff}, "envelope:");       // map32 of 4G entries
  expectFail({0xdd, 0xff, 0xff, 0xff, 0xff}, "envelope:");       // array32 of 4G entries
  expectFail({0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, "envelope:");  // str32 of 4G bytes
  expectFail({0xc6, 0xff, 0xff, 0xff, 0xff}, "envelope:");       // bin32 of 4G bytes
  expectFail({0xd4, 0x01, 0x00}, "envelope:");                   // fixext1
  // Deterministic random garbage never crashes and almost never decodes.
  std::mt19937 rng(1234);
  for (int i = 0; i < 5000; ++i) {
    Bytes b(rng() % 64);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (!b.empty() && (i % 2)) b[0] = 0x84;
    auto r = decodeEnvelope(b);
    if (r.ok()) (void)decodeBody<MetricsReport>(*r);
  }
}

TEST(IpcEnvelope, RejectsOversized) {
  // Whole input over the limit, and a body over the bin limit.
  expectFail(encodeEnvelope(MsgType::MetricsReport, 0, Bytes(kMaxEnvelopeBytes, 0x80)),
             "bytes > limit");
  expectFail(encodeEnvelope(MsgType::MetricsReport, 0, Bytes(kMaxBodyBytes + 1, 0x80)),
             "bin size overflow");
  DecodeLimits small = kEnvelopeLimits;
  small.maxInputBytes = 16;
  auto r = decodeEnvelope(encode(Ready{1}), small);
  EXPECT_FALSE(r.ok());
  // An array over the element limit inside a body.
  MetricsReport many;
  many.metrics.assign(kBodyLimits.maxArray + 1, metric("m", 1, MetricType::Counter));
  auto env = decodeEnvelope(encode(many));
  ASSERT_TRUE(env.ok()) << env.error();
  auto body = decodeBody<MetricsReport>(*env);
  ASSERT_FALSE(body.ok());
  EXPECT_NE(body.error().find("array size overflow"), std::string::npos) << body.error();
  // A string over the str limit.
  MetricsReport longName;
  longName.metrics.push_back(metric(std::string(kBodyLimits.maxStr + 1, 'x'), 1, MetricType::Gauge));
  env = decodeEnvelope(encode(longName));
  ASSERT_TRUE(env.ok()) << env.error();
  EXPECT_FALSE(decodeBody<MetricsReport>(*env).ok());
}

TEST(IpcEnvelope, RejectsDeepNesting) {
  // Body {"metrics": [[[[ ... ]]]]} 200 deep.
  Bytes body = {0x81, 0xa7, 'm', 'e', 't', 'r', 'i', 'c', 's'};
  body.insert(body.end(), 200, 0x91);
  body.push_back(0x01);
  auto env = decodeEnvelope(encodeEnvelope(MsgType::MetricsReport, 0, body));
  ASSERT_TRUE(env.ok()) << env.error();
  auto r = decodeBody<MetricsReport>(*env);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("depth"), std::string::npos) << r.error();
  // The envelope itself nested.
  Bytes deep = {0x81, 0xa4, 'b', 'o', 'd', 'y'};
  deep.insert(deep.end(), 50, 0x81);
  expectFail(deep, "envelope:");
}

TEST(IpcEnvelope, BodyTypeChecks) {
  auto env = decodeEnvelope(encode(Ready{7}));
  ASSERT_TRUE(env.ok());
  // Asking for the wrong payload type.
  auto wrong = decodeBody<Shutdown>(*env);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().find("envelope type Ready, want Shutdown"), std::string::npos);

  auto withBody = [](MsgType t, Bytes body) {
    auto e = decodeEnvelope(encodeEnvelope(t, 0, body));
    EXPECT_TRUE(e.ok()) << e.error();
    return *e;
  };
  // A field of the wrong type.
  EXPECT_FALSE(decodeBody<Ready>(withBody(MsgType::Ready, packMap({{"pid", str("x")}}))).ok());
  EXPECT_FALSE(decodeBody<Shutdown>(
                   withBody(MsgType::Shutdown, packMap({{"drain_deadline_ms", u(1ull << 40)}})))
                   .ok());
  // An unknown role name or metric type.
  EXPECT_FALSE(decodeBody<Hello>(withBody(MsgType::Hello, packMap({{"role", str("root")}}))).ok());
  EXPECT_FALSE(decodeBody<Hello>(withBody(MsgType::Hello, packMap({{"role", u(0)}}))).ok());
  // Missing keys keep defaults; unknown keys are ignored (forward compatible).
  auto hello = decodeBody<Hello>(
      withBody(MsgType::Hello, packMap({{"role", str("monitor")}, {"future_field", u(1)}})));
  ASSERT_TRUE(hello.ok()) << hello.error();
  EXPECT_EQ(hello->role, Role::Monitor);
  EXPECT_EQ(hello->ipcVersion, kIpcVersion);
  EXPECT_TRUE(hello->buildId.empty());
  // Trailing bytes after the body map.
  Envelope e = withBody(MsgType::Reload, {0x80});
  e.body.push_back(0x80);
  EXPECT_FALSE(decodeBody<Reload>(e).ok());
  // Body root not a map, reached directly.
  e.body = {0x90};
  EXPECT_FALSE(decodeBody<Reload>(e).ok());
}

TEST(IpcRole, Names) {
  for (Role r : kAllRoles) EXPECT_EQ(roleFromName(roleName(r)), r);
  EXPECT_EQ(roleName(Role::Supervisor), "derpd");
  EXPECT_EQ(roleName(Role::DerpWorker), "derp-worker");
  EXPECT_EQ(roleName(Role::StunWorker), "stun-worker");
  EXPECT_EQ(roleName(Role::CertAgent), "cert-agent");
  EXPECT_EQ(roleName(Role::MeshHelper), "mesh-helper");
  EXPECT_EQ(roleName(Role::Monitor), "monitor");
  EXPECT_FALSE(roleFromName("Monitor"));
  EXPECT_FALSE(roleFromName(""));
  EXPECT_FALSE(roleFromName(std::string_view("derpd\0", 6)));
  EXPECT_EQ(msgTypeName(uint16_t(0x0201)), "MetricsReport");
  EXPECT_EQ(msgTypeName(uint16_t(0xbeef)), "unknown(0xbeef)");
}

}  // namespace
}  // namespace derpd::ipc
