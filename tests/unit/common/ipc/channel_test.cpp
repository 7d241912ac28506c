#include "common/ipc/channel.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <vector>

#include "common/ipc/dispatch.hpp"
#include "common/ipc/policy.hpp"

namespace derpd::ipc {
namespace {

namespace fs = std::filesystem;

// A 0700 temp dir (mkdtemp) removed at teardown.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "derpd-ipc-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One side of a test connection: what it received and its first fault.
struct Side {
  explicit Side(Channel* c = nullptr) : ch(c) {}
  Channel* ch;
  std::vector<std::pair<Role, Envelope>> got;
  std::optional<PeerFault> fault;
  void poll() {
    if (fault) return;
    PollResult r = ch->poll([this](Role from, const Envelope& env) -> Result<void> {
      got.emplace_back(from, env);
      return okResult();
    });
    if (r.fault) fault = r.fault;
  }
};

// Drives every side through its fd (as an event loop would) until `done`
// or 5 s pass. Returns done().
bool pumpUntil(std::vector<Side*> sides, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (true) {
    for (Side* s : sides) s->poll();
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::vector<pollfd> fds;
    for (Side* s : sides) fds.push_back({s->ch->fd(), POLLIN, 0});
    ::poll(fds.data(), fds.size(), 20);
  }
}

class IpcChannel : public ::testing::Test {
 protected:
  void SetUp() override {
    runDir_ = tmp_.path() + "/run";
    auto r = Channel::bind(ctx_, Role::Supervisor, runDir_, "control",
                           ChannelOptions{"sup-build", kDefaultHwm, kDefaultHwm});
    ASSERT_TRUE(r.ok()) << r.error();
    sup_ = std::move(r).value();
    supSide_.ch = sup_.get();
  }

  std::unique_ptr<Channel> connectAs(Role role, ChannelOptions opts = {}) {
    auto r = Channel::connect(ctx_, role, Role::Supervisor, sup_->endpoint(), opts);
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // A raw DEALER with any identity, bypassing Channel's own checks.
  zmq::socket_t rawDealer(const std::string& identity) {
    zmq::socket_t s(ctx_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::routing_id, identity);
    s.connect(sup_->endpoint());
    return s;
  }

  // Waits for the supervisor to report a fault.
  PeerFault expectSupFault() {
    EXPECT_TRUE(pumpUntil({&supSide_}, [&] { return supSide_.fault.has_value(); }));
    EXPECT_TRUE(supSide_.got.empty());
    return supSide_.fault.value_or(PeerFault{});
  }

  TempDir tmp_;
  std::string runDir_;
  zmq::context_t ctx_;
  std::unique_ptr<Channel> sup_;
  Side supSide_;
};

TEST_F(IpcChannel, RuntimeDirIs0700AndEndpointInside) {
  struct stat st {};
  ASSERT_EQ(::lstat(runDir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(sup_->endpoint(), "ipc://" + runDir_ + "/control.sock");
  EXPECT_GE(sup_->fd(), 0);
}

TEST_F(IpcChannel, HelloThenMessagesBothWays) {
  auto worker = connectAs(Role::DerpWorker, ChannelOptions{"worker-build", 100, 100});
  ASSERT_TRUE(worker);
  Side w{worker.get()};
  // Before the handshake the supervisor cannot address the worker.
  EXPECT_EQ(sup_->send(Role::DerpWorker, Reload{}).status, SendStatus::NoPeer);

  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] {
    return sup_->peerReady(Role::DerpWorker) && worker->peerReady(Role::Supervisor);
  }));
  EXPECT_EQ(sup_->peerBuildId(Role::DerpWorker), "worker-build");
  EXPECT_EQ(worker->peerBuildId(Role::Supervisor), "sup-build");
  EXPECT_FALSE(sup_->peerReady(Role::StunWorker));
  EXPECT_TRUE(supSide_.got.empty());  // Hello is not delivered

  // child -> supervisor
  ASSERT_TRUE(worker->send(Role::Supervisor, Ready{4321}).ok());
  ASSERT_TRUE(worker->send(Role::Supervisor, MetricsSnapshotRequest{}, 77).ok());
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return supSide_.got.size() == 2; }));
  EXPECT_EQ(supSide_.got[0].first, Role::DerpWorker);
  auto ready = decodeBody<Ready>(supSide_.got[0].second);
  ASSERT_TRUE(ready.ok()) << ready.error();
  EXPECT_EQ(ready->pid, 4321);
  EXPECT_EQ(supSide_.got[1].second.type, MsgType::MetricsSnapshotRequest);
  EXPECT_EQ(supSide_.got[1].second.requestId, 77u);

  // supervisor -> child, the reply echoing the request id
  MetricsSnapshotReply reply{{RoleMetrics{Role::StunWorker,
                                          {Metric{"derpd_stun_requests", "", 9, MetricType::Counter}}}}};
  ASSERT_TRUE(sup_->send(Role::DerpWorker, reply, 77).ok());
  ASSERT_TRUE(sup_->send(Role::DerpWorker, Shutdown{1500}).ok());
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return w.got.size() == 2; }));
  EXPECT_EQ(w.got[0].first, Role::Supervisor);
  EXPECT_EQ(w.got[0].second.requestId, 77u);
  auto back = decodeBody<MetricsSnapshotReply>(w.got[0].second);
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_EQ(*back, reply);
  EXPECT_EQ(decodeBody<Shutdown>(w.got[1].second)->drainDeadlineMs, 1500u);
  EXPECT_FALSE(supSide_.fault);
  EXPECT_FALSE(w.fault);
}

TEST_F(IpcChannel, SendersCheckPolicyToo) {
  auto worker = connectAs(Role::StunWorker);
  ASSERT_TRUE(worker);
  EXPECT_EQ(worker->send(Role::Supervisor, Reload{}).status, SendStatus::Refused);
  EXPECT_EQ(worker->send(Role::Supervisor, MetricsSnapshotRequest{}).status, SendStatus::Refused);
  EXPECT_EQ(worker->send(Role::CertAgent, Ready{}).status, SendStatus::NoPeer);
  EXPECT_EQ(sup_->send(Role::StunWorker, Ready{}).status, SendStatus::Refused);
  EXPECT_EQ(sup_->send(Role::CertAgent, Reload{}).status, SendStatus::NoPeer);
}

TEST_F(IpcChannel, WrongVersionInHelloBodyIsFatal) {
  zmq::socket_t raw = rawDealer("stun-worker:4242");
  const Bytes wire = encode(Hello{Role::StunWorker, "newer", 2});
  raw.send(zmq::buffer(wire), zmq::send_flags::none);
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.peer, Role::StunWorker);
  EXPECT_EQ(f.type, MsgType::Hello);
  EXPECT_NE(f.reason.find("ipc_version 2, want 1"), std::string::npos) << f.reason;
  EXPECT_FALSE(sup_->peerReady(Role::StunWorker));
}

TEST_F(IpcChannel, WrongVersionEnvelopeIsFatal) {
  zmq::socket_t raw = rawDealer("cert-agent:4242");
  const Bytes wire = encodeEnvelope(MsgType::Hello, 0, encodeBody(Hello{Role::CertAgent, "x", 2}), 2);
  raw.send(zmq::buffer(wire), zmq::send_flags::none);
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.peer, Role::CertAgent);
  EXPECT_NE(f.reason.find("ipc_version 2"), std::string::npos) << f.reason;
  EXPECT_NE(f.describe().find("peer fault from cert-agent"), std::string::npos);
}

TEST_F(IpcChannel, ChildRejectsWrongVersionHelloFromSupervisor) {
  // A fake supervisor: a raw ROUTER answering with a version-2 Hello.
  TempDir other;
  ASSERT_TRUE(ensureRuntimeDir(other.path() + "/run").ok());
  const std::string ep = *ipcEndpoint(other.path() + "/run", "fake");
  zmq::socket_t router(ctx_, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(ep);
  auto child = Channel::connect(ctx_, Role::Monitor, Role::Supervisor, ep);
  ASSERT_TRUE(child.ok()) << child.error();
  zmq::message_t id, hello;
  ASSERT_TRUE(router.recv(id));  // blocking: the child's Hello is queued at connect
  ASSERT_TRUE(router.recv(hello));
  EXPECT_EQ(id.to_string(), "monitor:" + std::to_string(::getpid()));
  const Bytes bad = encode(Hello{Role::Supervisor, "other", 9});
  router.send(id, zmq::send_flags::sndmore);
  router.send(zmq::buffer(bad), zmq::send_flags::none);
  Side c{child->get()};
  ASSERT_TRUE(pumpUntil({&c}, [&] { return c.fault.has_value(); }));
  EXPECT_EQ(c.fault->peer, Role::Supervisor);
  EXPECT_NE(c.fault->reason.find("ipc_version 9"), std::string::npos) << c.fault->reason;
}

TEST_F(IpcChannel, MessageBeforeHelloIsAFault) {
  zmq::socket_t raw = rawDealer("mesh-helper:4242");
  raw.send(zmq::buffer(encode(Ready{1})), zmq::send_flags::none);
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.peer, Role::MeshHelper);
  EXPECT_EQ(f.type, MsgType::Ready);
  EXPECT_EQ(f.reason, "message before Hello");
}

TEST_F(IpcChannel, WrongSenderIsAFaultBeforeAnyHandler) {
  auto worker = connectAs(Role::StunWorker);
  ASSERT_TRUE(worker);
  Side w{worker.get()};
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return sup_->peerReady(Role::StunWorker); }));
  // stun-worker may not ask for the metrics snapshot.
  worker->sendRawForTest(Role::Supervisor, encode(MetricsSnapshotRequest{}));
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.peer, Role::StunWorker);
  EXPECT_EQ(f.type, MsgType::MetricsSnapshotRequest);
  EXPECT_NE(f.reason.find("not allowed"), std::string::npos);
  // The session is over: the next message needs a new Hello.
  EXPECT_FALSE(sup_->peerReady(Role::StunWorker));
}

TEST_F(IpcChannel, OversizedForPolicyIsAFault) {
  auto worker = connectAs(Role::DerpWorker);
  ASSERT_TRUE(worker);
  Side w{worker.get()};
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return sup_->peerReady(Role::DerpWorker); }));
  Ready big;
  Bytes body = encodeBody(big);
  body.resize(200, 0xc0);  // still starts with a map marker, over the 64-byte row
  worker->sendRawForTest(Role::Supervisor, encodeEnvelope(MsgType::Ready, 0, body));
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.type, MsgType::Ready);
  EXPECT_NE(f.reason.find("body 200 bytes > 64"), std::string::npos) << f.reason;
}

TEST_F(IpcChannel, HelloRoleMustMatchIdentity) {
  zmq::socket_t raw = rawDealer("monitor:4242");
  raw.send(zmq::buffer(encode(Hello{Role::DerpWorker, "liar", kIpcVersion})), zmq::send_flags::none);
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.peer, Role::Monitor);
  EXPECT_NE(f.reason.find("claims role derp-worker"), std::string::npos) << f.reason;
}

TEST_F(IpcChannel, UnknownIdentityAndGarbage) {
  {
    zmq::socket_t raw = rawDealer("evil");
    raw.send(zmq::buffer(encode(Hello{Role::DerpWorker, "x", kIpcVersion})), zmq::send_flags::none);
    PeerFault f = expectSupFault();
    EXPECT_FALSE(f.peer.has_value());
    EXPECT_NE(f.reason.find("is not <role>:<pid>"), std::string::npos) << f.reason;
  }
  supSide_.fault.reset();
  zmq::socket_t raw = rawDealer("derp-worker:4242");
  const char junk[] = "\xc1\xff\x00garbage";
  raw.send(zmq::buffer(junk, sizeof junk), zmq::send_flags::none);
  PeerFault f = expectSupFault();
  EXPECT_EQ(f.peer, Role::DerpWorker);
  EXPECT_FALSE(f.type.has_value());
}

TEST(IpcIdentity, ParsesRoleAndPid) {
  EXPECT_EQ(parseIdentity("stun-worker:123"), std::make_pair(Role::StunWorker, 123));
  EXPECT_EQ(parseIdentity("derp-worker:1"), std::make_pair(Role::DerpWorker, 1));
  for (const char* bad : {"stun-worker", "stun-worker:", "stun-worker:0", "stun-worker:012", "stun-worker:-1",
                          "stun-worker:12a", "stun-worker:1234567890", "evil:12", ":12", ""}) {
    EXPECT_FALSE(parseIdentity(bad).has_value()) << bad;
  }
}

// The supervisor named the child's pid at spawn: another process using the
// role's name (a child of an earlier derpd still draining, or a forger) is a
// fault with no peer, so the real child is neither displaced nor blamed.
TEST_F(IpcChannel, AnotherPidForAnExpectedRoleIsNotThatRole) {
  sup_->expectPeer(Role::StunWorker, 4242);
  zmq::socket_t stale = rawDealer("stun-worker:777");
  stale.send(zmq::buffer(encode(Hello{Role::StunWorker, "old", kIpcVersion})), zmq::send_flags::none);
  PeerFault f = expectSupFault();
  EXPECT_FALSE(f.peer.has_value());
  EXPECT_NE(f.reason.find("(pid 777) is not the current one (pid 4242)"), std::string::npos) << f.reason;
  EXPECT_FALSE(sup_->peerReady(Role::StunWorker));

  supSide_.fault.reset();
  auto real = connectAs(Role::StunWorker, ChannelOptions{"new", kDefaultHwm, kDefaultHwm, 4242});
  ASSERT_TRUE(real);
  Side w{real.get()};
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return w.ch->peerReady(Role::Supervisor); }));
  EXPECT_EQ(sup_->peerBuildId(Role::StunWorker), "new");
  // The stale one speaks again: still not stun-worker, and the session holds.
  stale.send(zmq::buffer(encode(Ready{1})), zmq::send_flags::none);
  f = expectSupFault();
  EXPECT_FALSE(f.peer.has_value());
  EXPECT_TRUE(sup_->peerReady(Role::StunWorker));
  supSide_.fault.reset();
  ASSERT_TRUE(sup_->send(Role::StunWorker, LogReopen{}).ok());
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return !w.got.empty(); }));
  EXPECT_EQ(w.got[0].second.type, MsgType::LogReopen);
}

// A child's connection is for the life of its supervisor: when the ROUTER
// goes away and a new one binds the same path, the old DEALER stays away.
TEST_F(IpcChannel, ChildDoesNotReconnectToANewSupervisor) {
  auto worker = connectAs(Role::StunWorker);
  ASSERT_TRUE(worker);
  Side w{worker.get()};
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return w.ch->peerReady(Role::Supervisor); }));
  sup_.reset();
  auto again = Channel::bind(ctx_, Role::Supervisor, runDir_, "control");
  ASSERT_TRUE(again.ok()) << again.error();
  sup_ = std::move(again).value();
  supSide_ = Side{sup_.get()};
  // A fresh child reaches the new supervisor...
  auto fresh = connectAs(Role::CertAgent);
  ASSERT_TRUE(fresh);
  Side c{fresh.get()};
  ASSERT_TRUE(pumpUntil({&supSide_, &c}, [&] { return c.ch->peerReady(Role::Supervisor); }));
  // ...while whatever the old one sends goes nowhere. Bounded negative
  // check: libzmq's default reconnect interval is 100 ms.
  for (int i = 0; i < 5; ++i) worker->sendRawForTest(Role::Supervisor, encode(Hello{Role::StunWorker, "old", kIpcVersion}));
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
  while (std::chrono::steady_clock::now() < until) {
    supSide_.poll();
    ::poll(nullptr, 0, 20);
  }
  EXPECT_FALSE(sup_->peerReady(Role::StunWorker));
  EXPECT_FALSE(supSide_.fault.has_value());
}

TEST_F(IpcChannel, QueueFullIsReportedNotDropped) {
  auto worker = connectAs(Role::CertAgent, ChannelOptions{"w", 4, 4});
  ASSERT_TRUE(worker);
  Side w{worker.get()};
  ASSERT_TRUE(pumpUntil({&supSide_, &w}, [&] { return sup_->peerReady(Role::CertAgent); }));
  // The worker stops reading; the supervisor's sends must eventually refuse.
  SendStatus last = SendStatus::Sent;
  int sent = 0;
  for (; sent < 500000 && last == SendStatus::Sent; ++sent) {
    last = sup_->send(Role::CertAgent, LogReopen{}).status;
  }
  EXPECT_EQ(last, SendStatus::QueueFull) << "after " << sent << " sends";
}

TEST(IpcRuntimeDir, CreatesAndChecks) {
  TempDir tmp;
  const std::string d = tmp.path() + "/run";
  ASSERT_TRUE(ensureRuntimeDir(d).ok());
  struct stat st {};
  ASSERT_EQ(::lstat(d.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(ensureRuntimeDir(d).ok());  // existing and correct

  ASSERT_EQ(::chmod(d.c_str(), 0750), 0);
  auto r = ensureRuntimeDir(d);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("mode 0750"), std::string::npos) << r.error();
  ASSERT_EQ(::chmod(d.c_str(), 0701), 0);
  EXPECT_FALSE(ensureRuntimeDir(d).ok());
  ASSERT_EQ(::chmod(d.c_str(), 0700), 0);

  // A symlink to a good directory is refused.
  const std::string link = tmp.path() + "/link";
  ASSERT_EQ(::symlink(d.c_str(), link.c_str()), 0);
  EXPECT_FALSE(ensureRuntimeDir(link).ok());
  // A file is refused; a relative path is refused.
  const std::string file = tmp.path() + "/file";
  fs::create_directories(tmp.path());
  { FILE* f = std::fopen(file.c_str(), "w"); ASSERT_NE(f, nullptr); std::fclose(f); }
  EXPECT_FALSE(ensureRuntimeDir(file).ok());
  EXPECT_FALSE(ensureRuntimeDir("relative/run").ok());
  // And bind refuses a bad directory.
  zmq::context_t ctx;
  ASSERT_EQ(::chmod(d.c_str(), 0755), 0);
  EXPECT_FALSE(Channel::bind(ctx, Role::Supervisor, d, "control").ok());
  ASSERT_EQ(::chmod(d.c_str(), 0700), 0);

  // Owned by someone else (needs root to arrange).
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(d.c_str(), 65534, 65534), 0);
    r = ensureRuntimeDir(d);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().find("owned by uid 65534"), std::string::npos) << r.error();
  } else {
    GTEST_LOG_(INFO) << "not root: skipping the foreign-owner case";
  }
}

TEST(IpcRuntimeDir, EndpointPath) {
  EXPECT_EQ(*ipcEndpoint("/run/derpd", "control"), "ipc:///run/derpd/control.sock");
  EXPECT_FALSE(ipcEndpoint("/run/derpd", "a/b").ok());
  EXPECT_FALSE(ipcEndpoint("/" + std::string(200, 'x'), "control").ok());
}

}  // namespace
}  // namespace derpd::ipc
