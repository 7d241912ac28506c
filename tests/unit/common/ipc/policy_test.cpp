#include "common/ipc/policy.hpp"

#include <gtest/gtest.h>

#include "common/ipc/dispatch.hpp"

namespace derpd::ipc {
namespace {

TEST(IpcPolicy, HelloBetweenSupervisorAndEveryChild) {
  for (Role c : kChildRoles) {
    EXPECT_TRUE(checkPolicy(MsgType::Hello, Role::Supervisor, c, 100).ok());
    EXPECT_TRUE(checkPolicy(MsgType::Hello, c, Role::Supervisor, 100).ok());
  }
  EXPECT_FALSE(checkPolicy(MsgType::Hello, Role::Supervisor, Role::Supervisor, 10).ok());
}

TEST(IpcPolicy, DirectionIsEnforced) {
  for (Role c : kChildRoles) {
    for (MsgType t : {MsgType::Reload, MsgType::Shutdown, MsgType::LogReopen}) {
      EXPECT_TRUE(checkPolicy(t, Role::Supervisor, c, 0).ok());
      EXPECT_FALSE(checkPolicy(t, c, Role::Supervisor, 0).ok());
    }
    for (MsgType t : {MsgType::Ready, MsgType::MetricsReport}) {
      EXPECT_TRUE(checkPolicy(t, c, Role::Supervisor, 10).ok());
      EXPECT_FALSE(checkPolicy(t, Role::Supervisor, c, 10).ok());
    }
  }
  // Only derp-worker asks for the snapshot, and only it gets the reply.
  EXPECT_TRUE(checkPolicy(MsgType::MetricsSnapshotRequest, Role::DerpWorker, Role::Supervisor, 1).ok());
  EXPECT_TRUE(checkPolicy(MsgType::MetricsSnapshotReply, Role::Supervisor, Role::DerpWorker, 1).ok());
  for (Role c : {Role::StunWorker, Role::CertAgent, Role::MeshHelper, Role::Monitor}) {
    EXPECT_FALSE(checkPolicy(MsgType::MetricsSnapshotRequest, c, Role::Supervisor, 1).ok());
    EXPECT_FALSE(checkPolicy(MsgType::MetricsSnapshotReply, Role::Supervisor, c, 1).ok());
  }
  // No child-to-child rows yet.
  EXPECT_FALSE(checkPolicy(MsgType::Reload, Role::DerpWorker, Role::StunWorker, 0).ok());
  auto r = checkPolicy(MsgType::MetricsReport, Role::StunWorker, Role::CertAgent, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "MetricsReport from stun-worker to cert-agent not allowed");
  // Unknown types have no row.
  EXPECT_FALSE(checkPolicy(static_cast<MsgType>(0x7777), Role::Supervisor, Role::DerpWorker, 0).ok());
}

TEST(IpcPolicy, SizeLimits) {
  const PolicyRule* rule = findPolicy(MsgType::Shutdown, Role::Supervisor, Role::StunWorker);
  ASSERT_NE(rule, nullptr);
  EXPECT_TRUE(checkPolicy(MsgType::Shutdown, Role::Supervisor, Role::StunWorker, rule->maxBodyBytes).ok());
  auto r = checkPolicy(MsgType::Shutdown, Role::Supervisor, Role::StunWorker, rule->maxBodyBytes + 1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("bytes > 64"), std::string::npos) << r.error();
  // Realistic bodies fit their rows.
  EXPECT_LE(encodeBody(Shutdown{0xffffffff}).size(), rule->maxBodyBytes);
  // Two manual certificate files at their read limit fit ManualCertFiles.
  ManualCertFiles files{"certificate files changed",
                        ManualCertFile{std::string(1000, '/'), std::string(kMaxManualCertFile, 'c'), false, ""},
                        ManualCertFile{std::string(1000, '/'), std::string(kMaxManualCertFile, 'k'), false, ""}};
  EXPECT_LE(encodeBody(files).size(),
            findPolicy(MsgType::ManualCertFiles, Role::Supervisor, Role::CertAgent)->maxBodyBytes);
  EXPECT_LE(encodeBody(Hello{Role::MeshHelper, std::string(200, 'b'), kIpcVersion}).size(),
            findPolicy(MsgType::Hello, Role::MeshHelper, Role::Supervisor)->maxBodyBytes);
  EXPECT_EQ(maxBodyFor(Role::DerpWorker), kMaxBodyBytes);
  EXPECT_EQ(maxBodyFor(Role::Supervisor), 512u * 1024u);  // CertUpdate from cert-agent
  EXPECT_EQ(maxBodyFor(Role::CertAgent), 512u * 1024u);   // ManualCertFiles (a chain and a key)
  EXPECT_EQ(maxBodyFor(Role::MeshHelper), 4096u);         // Reload, VerifyRequest
  EXPECT_EQ(maxBodyFor(Role::StunWorker), 4096u);  // Reload
}

TEST(IpcPolicy, EveryMessageHasARow) {
  std::apply(
      [](auto... m) {
        auto hasRow = [](MsgType t) {
          for (const PolicyRule& r : kPolicy) {
            if (r.type == t) return true;
          }
          return false;
        };
        auto check = [&](MsgType t) { EXPECT_TRUE(hasRow(t)) << msgTypeName(t); };
        (check(decltype(m)::kType), ...);
      },
      AllMessages{});
}

// ---- dispatch ----

struct FakeWorker {
  int reloads = 0;
  uint32_t deadline = 0;
  Result<void> onReload(Role from, const Reload&) {
    ++reloads;
    return okResult();
  }
  Result<void> onShutdown(Role from, const Shutdown& m) {
    if (m.drainDeadlineMs > 60000) return makeError("deadline too long");
    deadline = m.drainDeadlineMs;
    return okResult();
  }
};

constexpr std::array kFakeHandlers = {handlerFor<&FakeWorker::onReload>(),
                                      handlerFor<&FakeWorker::onShutdown>()};
static_assert(uniqueTypes(kFakeHandlers));
static_assert(kFakeHandlers[1].type == MsgType::Shutdown);

Envelope envOf(const Bytes& wire) {
  auto e = decodeEnvelope(wire);
  EXPECT_TRUE(e.ok()) << e.error();
  return *e;
}

TEST(IpcDispatch, RunsTheRowForTheType) {
  FakeWorker w;
  EXPECT_TRUE(dispatch(w, kFakeHandlers, Role::Supervisor, envOf(encode(Reload{}))).ok());
  EXPECT_TRUE(dispatch(w, kFakeHandlers, Role::Supervisor, envOf(encode(Shutdown{2500}))).ok());
  EXPECT_EQ(w.reloads, 1);
  EXPECT_EQ(w.deadline, 2500u);
  // The handler's own refusal comes back as an error.
  EXPECT_FALSE(dispatch(w, kFakeHandlers, Role::Supervisor, envOf(encode(Shutdown{70000}))).ok());
}

TEST(IpcDispatch, UnknownTypeAndBadBodyAreFaults) {
  FakeWorker w;
  auto r = dispatch(w, kFakeHandlers, Role::Supervisor, envOf(encode(LogReopen{})));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "no handler for LogReopen from derpd");
  // {"drain_deadline_ms": "soon"}
  Envelope bad = envOf(encodeEnvelope(MsgType::Shutdown, 0,
                                      Bytes{0x81, 0xb1, 'd', 'r', 'a', 'i', 'n', '_', 'd', 'e', 'a',
                                            'd', 'l', 'i', 'n', 'e', '_', 'm', 's', 0xa4, 's', 'o',
                                            'o', 'n'}));
  EXPECT_FALSE(dispatch(w, kFakeHandlers, Role::Supervisor, bad).ok());
  EXPECT_EQ(w.deadline, 0u);
}

}  // namespace
}  // namespace derpd::ipc
