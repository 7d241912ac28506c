// derpd's control plane (docs/IPC.md) driven from outside: per-role up and
// restart counters in /debug/varz, a forged, oversized, unknown or
// undecodable message faulting only its receiver (derpd kills and restarts
// the sender it names; a derp-worker receiving one exits 1), SIGHUP carrying
// a new mesh key and log level to derp-worker, SIGUSR1 reopening the log file
// with the children's lines in it.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>

#include "common/ipc/channel.hpp"
#include "common/ipc/envelope.hpp"
#include "common/ipc/messages.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

using ipc::MsgType;
using ipc::Role;

// Pumps `ch` until pred() or the timeout; faults are recorded, not fatal.
bool pump(ipc::Channel& ch, const std::function<bool()>& pred, Millis timeout,
          std::vector<ipc::Envelope>* got = nullptr) {
  return waitFor(
      [&] {
        ch.poll([&](Role, const ipc::Envelope& env) -> Result<void> {
          if (got) got->push_back(env);
          return okResult();
        });
        return pred();
      },
      timeout, Millis(5));
}

// The bad messages of the issue: a type nobody knows, a known type over its
// size limit, a message from a sender the policy does not allow, bytes that
// are not an envelope.
enum class Bad { UnknownType, Oversized, WrongSender, Undecodable };

const char* badName(Bad b) {
  switch (b) {
    case Bad::UnknownType: return "UnknownType";
    case Bad::Oversized: return "Oversized";
    case Bad::WrongSender: return "WrongSender";
    case Bad::Undecodable: return "Undecodable";
  }
  return "?";
}

// A raw message that `from` sends to `to` and that `to` must refuse.
Bytes badMessage(Bad b, Role from) {
  switch (b) {
    case Bad::UnknownType: {
      // A valid envelope in every respect but its type.
      Bytes body = ipc::encodeBody(ipc::LogReopen{});
      return ipc::encodeEnvelope(static_cast<MsgType>(0x7777), 0, body);
    }
    case Bad::Oversized: {
      // A message `from` may send, with a body over its policy limit.
      ipc::Metric m{"derpd_padding", std::string(150, 'x'), 1, ipc::MetricType::Counter};
      if (from == Role::Supervisor) {
        ipc::Reload r{"info", std::string(5000, 'a')};  // limit 4 KiB
        return ipc::encode(r);
      }
      ipc::MetricsReport rep;
      rep.metrics.assign(2000, m);  // ~400 KiB, limit 256 KiB
      return ipc::encode(rep);
    }
    case Bad::WrongSender:
      // A type that another role may send, not this one: only derp-worker
      // sends MetricsSnapshotRequest; derpd sends ManualCertFiles only to
      // cert-agent (the policy table, not the type, must refuse them).
      if (from == Role::Supervisor) return ipc::encode(ipc::ManualCertFiles{});
      if (from == Role::DerpWorker) return ipc::encode(ipc::CertUpdate{});
      return ipc::encode(ipc::MetricsSnapshotRequest{});
    case Bad::Undecodable:
      return Bytes{0xc1, 0x00, 0xff, 0x13, 0x37};
  }
  return {};
}

class ControlTest : public WorkerTest {
 protected:
  std::string controlEndpoint() { return "ipc://" + tmp().file("run") + "/control.sock"; }
};

TEST_F(ControlTest, VarzShowsRoleUpAndRestartCounters) {
  allowErrorLine("derp-worker killed by signal 9");
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(waitForMetric(*d, "derpd_role_up{role=\"derp-worker\"}", [](double v) { return v == 1; }));
  EXPECT_TRUE(waitForMetric(*d, "derpd_role_restarts{role=\"derp-worker\"}", [](double v) { return v == 0; }));
  pid_t first = startedPid(*d, "derp-worker", 1);
  ASSERT_GT(first, 0);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(waitFor([&] { return startedPid(*d, "derp-worker", 2) > 0; }, Millis(5000)));
  EXPECT_TRUE(waitForMetric(*d, "derpd_role_restarts{role=\"derp-worker\"}", [](double v) { return v == 1; },
                            Millis(5000)));
  EXPECT_TRUE(waitForMetric(*d, "derpd_role_up{role=\"derp-worker\"}", [](double v) { return v == 1; }));
}

// derpd as the receiver: a message claiming to come from a role is a fault
// of that role; derpd kills and restarts that child and nothing else, and
// keeps running itself.
class ForgedToDerpd : public ControlTest, public ::testing::WithParamInterface<Bad> {};

TEST_P(ForgedToDerpd, RestartsOnlyTheNamedChild) {
  allowErrorLine("control: peer fault from stun-worker");
  allowErrorLine("stun-worker killed by signal 9");
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(5000)));
  pid_t stun = startedPid(*d, "stun-worker", 1);
  ASSERT_GT(stun, 0);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));

  // A process of derpd's user can reach the 0700 runtime dir and claim to be
  // stun-worker, pid and all (docs/IPC.md: the identity is asserted by the
  // peer).
  zmq::context_t ctx(1);
  ipc::ChannelOptions forged;
  forged.pid = stun;
  auto ch = ipc::Channel::connect(ctx, Role::StunWorker, Role::Supervisor, controlEndpoint(), forged);
  ASSERT_TRUE(ch.ok()) << ch.error();
  ASSERT_TRUE(pump(**ch, [&] { return (*ch)->peerReady(Role::Supervisor); }, Millis(5000)));
  ASSERT_TRUE((*ch)->sendRawForTest(Role::Supervisor, badMessage(GetParam(), Role::StunWorker)).ok());

  ASSERT_TRUE(d->waitForLog("control: peer fault from stun-worker", Millis(5000))) << d->logText();
  ASSERT_TRUE(waitFor([&] { return startedPid(*d, "stun-worker", 2) > 0; }, Millis(5000)));
  EXPECT_TRUE(waitFor([&] { return ::kill(stun, 0) != 0; }, Millis(2000))) << "the faulting child must be gone";
  EXPECT_TRUE(d->running()) << "derpd itself must survive";
  // derp-worker is the same process and its connections relay.
  EXPECT_EQ(startedPid(*d, "derp-worker", 2), -1);
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 7)));
}

// The same role name from another pid (say a child of an earlier derpd,
// still draining) is not that role: derpd ignores it and keeps its child.
TEST_P(ForgedToDerpd, FromAnotherPidIsIgnored) {
  allowErrorLine("is not the current one");
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->waitForLog("stun-worker is ready", Millis(5000)));
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));
  zmq::context_t ctx(1);
  auto ch = ipc::Channel::connect(ctx, Role::StunWorker, Role::Supervisor, controlEndpoint());
  ASSERT_TRUE(ch.ok()) << ch.error();
  ASSERT_TRUE((*ch)->sendRawForTest(Role::Supervisor, badMessage(GetParam(), Role::StunWorker)).ok());
  const std::string want = "stun-worker (pid " + std::to_string(::getpid()) + ") is not the current one";
  ASSERT_TRUE(d->waitForLog(want + " (pid " + std::to_string(startedPid(*d, "stun-worker", 1)) +
                                "): a stale or forged connection; ignored",
                            Millis(5000)))
      << d->logText();
  EXPECT_FALSE((*ch)->peerReady(Role::Supervisor)) << "its Hello must not be answered";
  EXPECT_EQ(startedPid(*d, "stun-worker", 2), -1);
  EXPECT_EQ(startedPid(*d, "derp-worker", 2), -1);
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 9)));
  EXPECT_TRUE(d->running());
}

TEST_P(ForgedToDerpd, FromARoleNotRunningChangesNothing) {
  allowErrorLine("control: peer fault from monitor");
  WorkerProcess* d = startDerpd(derpdArgs());
  ASSERT_NE(d, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));
  zmq::context_t ctx(1);
  auto ch = ipc::Channel::connect(ctx, Role::Monitor, Role::Supervisor, controlEndpoint());
  ASSERT_TRUE(ch.ok()) << ch.error();
  ASSERT_TRUE(pump(**ch, [&] { return (*ch)->peerReady(Role::Supervisor); }, Millis(5000)));
  ASSERT_TRUE((*ch)->sendRawForTest(Role::Supervisor, badMessage(GetParam(), Role::Monitor)).ok());
  ASSERT_TRUE(d->waitForLog("control: peer fault from monitor", Millis(5000))) << d->logText();
  EXPECT_TRUE(d->waitForLog("ignored (no such child running)", Millis(1000)));
  // Same worker, same connections.
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 8)));
  EXPECT_EQ(startedPid(*d, "derp-worker", 2), -1);
  EXPECT_TRUE(d->running());
}

INSTANTIATE_TEST_SUITE_P(Bad, ForgedToDerpd,
                         ::testing::Values(Bad::UnknownType, Bad::Oversized, Bad::WrongSender, Bad::Undecodable),
                         [](const auto& info) { return std::string(badName(info.param)); });

// derp-worker as the receiver, with the test in derpd's place: after the
// handshake and Ready, a bad message makes it exit 1 naming the fault.
class BadToWorker : public ControlTest, public ::testing::WithParamInterface<Bad> {};

TEST_P(BadToWorker, WorkerExitsWithStatusOne) {
  allowErrorLine("control: peer fault from derpd");
  zmq::context_t ctx(1);
  auto sup = ipc::Channel::bind(ctx, Role::Supervisor, tmp().file("run"), "control");
  ASSERT_TRUE(sup.ok()) << sup.error();
  ipc::Channel& ch = **sup;

  // derp-worker waits for our Hello before it serves: answer it from a
  // thread while start() waits for the "serving DERP on" line.
  std::atomic<bool> stop{false};
  std::vector<ipc::Envelope> got;
  std::thread helloer(
      [&] { pump(ch, [&] { return stop.load() || ch.peerReady(Role::DerpWorker); }, Millis(15000), &got); });
  WorkerProcess* w = startWorkerArgs({"-dev", "-a", "127.0.0.1:0", "--threads", "1", "--log-level", "debug",
                                      "--control", controlEndpoint()});
  stop = true;
  helloer.join();
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(ch.peerReady(Role::DerpWorker));
  auto sawReady = [&] {
    return std::any_of(got.begin(), got.end(), [](const ipc::Envelope& e) { return e.type == MsgType::Ready; });
  };
  ASSERT_TRUE(pump(ch, sawReady, Millis(5000), &got));

  w->expectExit();
  ASSERT_TRUE(ch.sendRawForTest(Role::DerpWorker, badMessage(GetParam(), Role::Supervisor)).ok());
  ASSERT_TRUE(waitFor([&] { return !w->running(); }, Millis(5000))) << "derp-worker did not exit";
  EXPECT_EQ(w->exitStatus(), 1);
  EXPECT_TRUE(w->waitForLog("control: peer fault from derpd", Millis(100))) << w->logText();
}

INSTANTIATE_TEST_SUITE_P(Bad, BadToWorker,
                         ::testing::Values(Bad::UnknownType, Bad::Oversized, Bad::WrongSender, Bad::Undecodable),
                         [](const auto& info) { return std::string(badName(info.param)); });

// A derp-worker told to use a control socket where nobody answers gives up
// with a clear error instead of serving unsupervised.
TEST_F(ControlTest, WorkerWithoutSupervisorGivesUp) {
  WorkerProcess p;
  auto r = p.start({"-dev", "-a", "127.0.0.1:0", "--control", "ipc://" + tmp().file("nobody.sock")},
                   workerBinary());
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(p.exitStatus(), 1);
  EXPECT_TRUE(p.waitForLog("does not exist", Millis(100))) << p.logText();
}

// SIGHUP re-reads -mesh-psk-file: the new key admits mesh peers, the old one
// no longer does, and a connection made before keeps relaying.
TEST_F(ControlTest, SighupRotatesTheMeshKey) {
  const std::string oldKey = std::string(kMeshKey);
  const std::string newKey(64, 'b');
  std::string keyFile = writeMeshKeyFile(oldKey);
  auto args = derpdArgs();
  args.insert(args.end(), {"-mesh-psk-file", keyFile});
  WorkerProcess* d = startDerpd(args);
  ASSERT_NE(d, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*d, keys::bob()));
  auto meshWith = [&](const std::string& key) {
    return dial(*d, keys::mesh(), [key](client::ClientOptions& o) { o.meshKey = key; });
  };
  {
    DERPD_ASSERT_CONNECT(m, meshWith(oldKey));
    ASSERT_TRUE(m->watchConns().ok());
    EXPECT_TRUE(recvUntil<client::PeerPresent>(*m, kIoTimeout).ok());
  }

  ASSERT_TRUE(writeFile(keyFile, newKey + "\n", 0600));
  ASSERT_EQ(::kill(d->pid(), SIGHUP), 0);
  ASSERT_TRUE(d->waitForLog("reload: log level debug, mesh key set", Millis(5000))) << d->logText();
  EXPECT_TRUE(d->waitForLog("SIGHUP: new mesh key from", Millis(100)));

  {
    DERPD_ASSERT_CONNECT(m, meshWith(newKey));
    ASSERT_TRUE(m->watchConns().ok());
    EXPECT_TRUE(recvUntil<client::PeerPresent>(*m, kIoTimeout).ok());
  }
  {
    DERPD_ASSERT_CONNECT(m, meshWith(oldKey));
    ASSERT_TRUE(m->watchConns().ok());
    EXPECT_TRUE(expectClosed(*m)) << "the old mesh key must no longer be accepted";
  }
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 9)));
  EXPECT_EQ(startedPid(*d, "derp-worker", 2), -1) << "SIGHUP must not restart the worker";
}

// A mesh key file that became invalid: SIGHUP keeps everything as it was.
TEST_F(ControlTest, SighupWithABrokenMeshKeyKeepsTheOldOne) {
  allowErrorLine("SIGHUP: config not reloaded");
  std::string keyFile = writeMeshKeyFile();
  auto args = derpdArgs();
  args.insert(args.end(), {"-mesh-psk-file", keyFile});
  WorkerProcess* d = startDerpd(args);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(writeFile(keyFile, "not hex at all\n", 0600));
  ASSERT_EQ(::kill(d->pid(), SIGHUP), 0);
  ASSERT_TRUE(d->waitForLog("SIGHUP: config not reloaded, keeping the running one: mesh key file", Millis(5000)))
      << d->logText();
  DERPD_ASSERT_CONNECT(m, dial(*d, keys::mesh(), [](client::ClientOptions& o) { o.meshKey = kMeshKey; }));
  ASSERT_TRUE(m->watchConns().ok());
  EXPECT_TRUE(recvUntil<client::PeerPresent>(*m, kIoTimeout).ok());
}

// A changed setting that needs new sockets is named in the log, not applied.
TEST_F(ControlTest, SighupNamesSettingsThatNeedARestart) {
  auto args = derpdArgs();
  WorkerProcess* d = startDerpd(args);
  ASSERT_NE(d, nullptr);
  std::string conf = *flagValue(args, "config");
  ASSERT_TRUE(writeFile(conf, "http-port = 8080\n"));
  ASSERT_EQ(::kill(d->pid(), SIGHUP), 0);
  ASSERT_TRUE(d->waitForLog("SIGHUP: http-port changed (80 -> 8080); that takes effect when derpd restarts",
                            Millis(5000)))
      << d->logText();
  EXPECT_TRUE(d->waitForLog("reload: log level debug", Millis(5000)));
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  EXPECT_TRUE(pingPong(*a, {1, 2, 3, 4, 5, 6, 7, 8}, Millis(3000), nullptr));
}

}  // namespace
}  // namespace derpd::test

namespace derpd::test {
namespace {

// With --log-file every line, the children's included (derpd copies them
// from their stderr), goes to the file; SIGUSR1 after a rotation (rename)
// makes derpd write to a new file at the configured path.
TEST_F(ControlTest, SigusrOneReopensTheLogFileWithTheChildrensLines) {
  WorkerProcess d;
  const std::string logFile = d.logPath();  // the harness reads this path
  auto args = derpdArgs();
  args.insert(args.end(), {"--log-file", logFile});
  auto r = d.start(args, binDir() + "/derpd");
  ASSERT_TRUE(r.ok()) << r.error() << "\n" << d.logText();
  std::string first = d.logText();
  EXPECT_NE(first.find("derpd["), std::string::npos);
  EXPECT_NE(first.find("] info: serving DERP on"), std::string::npos) << first;

  ASSERT_EQ(::rename(logFile.c_str(), (logFile + ".1").c_str()), 0);
  ASSERT_EQ(::kill(d.pid(), SIGUSR1), 0);
  ASSERT_TRUE(waitFor([&] { return d.logText().find("SIGUSR1: log file reopened") != std::string::npos; },
                      Millis(5000)));
  ASSERT_EQ(::kill(d.pid(), SIGHUP), 0);
  ASSERT_TRUE(waitFor([&] { return d.logText().find("derp-worker[") != std::string::npos &&
                                   d.logText().find("reload: log level") != std::string::npos; },
                      Millis(5000)))
      << d.logText();
  std::string rotated = readFile(logFile + ".1").value_or("");
  EXPECT_EQ(rotated.find("reload: log level"), std::string::npos) << "written to the rotated file";
  auto st = d.stop(SIGTERM);
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_EQ(*st, 0);
  EXPECT_TRUE(d.errorLines().empty()) << d.logText();
}

}  // namespace
}  // namespace derpd::test

namespace derpd::test {
namespace {

// The server key is not swapped live: a changed key file is named in the log
// and the relay keeps the key clients already know.
TEST_F(ControlTest, SighupNoticesAChangedServerKeyWithoutApplyingIt) {
  std::string keyFile = writeServerKeyFile();
  auto args = derpdArgs();
  args.insert(args.end(), {"-c", keyFile});
  WorkerProcess* d = startDerpd(args);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(writeFile(keyFile, crypto::keyFileContents(crypto::NodePrivate::generate()), 0600));
  ASSERT_EQ(::kill(d->pid(), SIGHUP), 0);
  ASSERT_TRUE(d->waitForLog("SIGHUP: the server key in " + keyFile + " changed; it takes effect when derpd restarts",
                            Millis(5000)))
      << d->logText();
  DERPD_ASSERT_CONNECT(a, dial(*d, keys::alice()));
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
}

}  // namespace
}  // namespace derpd::test
