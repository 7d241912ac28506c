// derp-worker as a process: flags (Go syntax), the -c key file (PROTOCOL.md
// §8), -dev, signals, and many clients spread over two event loops.
#include <sys/stat.h>

#include <regex>
#include <string>
#include <vector>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

class LifecycleTest : public WorkerTest {};

TEST_F(LifecycleTest, SigtermExitsZeroWithClientsConnected) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  ASSERT_TRUE(exchange(*a, *b, patternBytes(100, 1)));
  auto r = w->stop(SIGTERM);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, 0);
  EXPECT_TRUE(expectClosed(*a));
  EXPECT_TRUE(expectClosed(*b));
}

// Graceful stop: clients get the Restarting frame, then the connection ends;
// a client that keeps its side open does not hold the exit past the deadline.
TEST_F(LifecycleTest, SigtermDrainsWithRestartingFrame) {
  std::vector<std::string> args = {"-a", "127.0.0.1:0", "-dev", "--threads", "2", "--drain-timeout", "3s"};
  WorkerProcess* w = startWorkerArgs(args);
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(ws, dial(*w, keys::ws1(), [](client::ClientOptions& o) { o.websocket = true; }));
  auto start = std::chrono::steady_clock::now();
  auto r = w->stop(SIGTERM);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3500));
  for (client::Client* c : {a.get(), ws.get()}) {
    auto m = recvUntil<client::Restarting>(*c, Millis(3000));
    ASSERT_TRUE(m.ok()) << m.error();
    EXPECT_TRUE(expectClosed(*c));
  }
  EXPECT_TRUE(w->waitForLog("draining", Millis(100)));
}

TEST_F(LifecycleTest, SigintExitsZero) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  auto r = w->stop(SIGINT);
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, 0);
  EXPECT_TRUE(expectClosed(*a));
}

// A missing -c file is created (0600, derper's format) and its key is the
// one served; a restart with the same file serves the same key (§12.8).
TEST_F(LifecycleTest, KeyFileCreatedAndReused) {
  std::string path = tmp().file("new-derper.key");
  std::vector<std::string> args = {"-a", "127.0.0.1:0", "-c", path, "--threads", "2", "--log-level", "debug"};
  crypto::NodePublic first;
  {
    WorkerProcess* w = startWorkerArgs(args);
    ASSERT_NE(w, nullptr);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << "key file not created";
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto text = readFile(path);
    ASSERT_TRUE(text.has_value());
    std::smatch mt;
    static const std::regex kFormat("^\\{\\n\\t\"PrivateKey\": \"(privkey:[0-9a-f]{64})\"\\n\\}$");
    ASSERT_TRUE(std::regex_match(*text, mt, kFormat)) << "'" << *text << "'";
    auto priv = crypto::NodePrivate::parseText(mt[1].str());
    ASSERT_TRUE(priv.ok()) << priv.error();
    DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
    first = a->serverKey();
    EXPECT_EQ(first, priv->publicKey());
    auto r = w->stop();
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(*r, 0);
  }
  WorkerProcess* w2 = startWorkerArgs(args);
  ASSERT_NE(w2, nullptr);
  DERPD_ASSERT_CONNECT(a2, dial(*w2, keys::alice()));
  EXPECT_EQ(a2->serverKey(), first);
}

// Key names in the file are matched case-insensitively, unknown ones ignored.
TEST_F(LifecycleTest, KeyFileLenientJson) {
  std::string path = tmp().file("lenient.key");
  ASSERT_TRUE(writeFile(path, std::string("{\"privatekey\": \"privkey:") + kServerPrivateHex +
                                  "\", \"Unknown\": [1, 2]}\n",
                        0600));
  WorkerProcess* w = startWorkerArgs({"-a", "127.0.0.1:0", "-c", path, "--threads", "2"});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
}

// -dev: plain HTTP, a fresh random key on every start.
TEST_F(LifecycleTest, DevModeRandomKey) {
  WorkerConfig cfg;
  cfg.fixedKey = false;
  WorkerProcess* w1 = startWorker(cfg);
  ASSERT_NE(w1, nullptr);
  WorkerProcess* w2 = startWorker(cfg);
  ASSERT_NE(w2, nullptr);
  EXPECT_EQ(w1->url().rfind("http://", 0), 0u) << w1->url();
  DERPD_ASSERT_CONNECT(a, dial(*w1, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w2, keys::alice()));
  EXPECT_NE(a->serverKey(), b->serverKey());
  EXPECT_FALSE(a->serverKey().isZero());
  DERPD_ASSERT_CONNECT(c, dial(*w1, keys::bob()));
  EXPECT_TRUE(exchange(*a, *c, patternBytes(100, 1)));
}

// Without -dev, -c is required: the worker refuses to start.
TEST_F(LifecycleTest, ConfigRequiredWithoutDev) {
  WorkerProcess w;
  auto r = w.start({"-a", "127.0.0.1:0", "--threads", "2"});
  EXPECT_FALSE(r.ok()) << "started without -c or -dev";
  if (!r.ok()) {
    ASSERT_TRUE(w.exitStatus().has_value()) << r.error();
    EXPECT_NE(*w.exitStatus(), 0);
  }
}

// Go flag syntax: --name=value, -name=value, --name value.
TEST_F(LifecycleTest, GoFlagSyntax) {
  std::string key = writeServerKeyFile();
  WorkerProcess* w = startWorkerArgs({"--a", "127.0.0.1:0", "-c=" + key, "--threads=2", "-log-level=debug",
                                      "--derp=true"});
  ASSERT_NE(w, nullptr);
  DERPD_ASSERT_CONNECT(a, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(b, dial(*w, keys::bob()));
  EXPECT_EQ(a->serverKey(), keys::serverPublic());
  EXPECT_TRUE(exchange(*a, *b, patternBytes(1280, 2)));
}

// Many clients (spread over both event loops) in a ring: each sends to the
// next and receives from the previous.
TEST_F(LifecycleTest, RingOfClientsAcrossLoops) {
  WorkerProcess* w = startWorker({});
  ASSERT_NE(w, nullptr);
  constexpr int kN = 24;
  std::vector<std::unique_ptr<client::Client>> cs;
  for (int i = 0; i < kN; i++) {
    auto c = dial(*w, crypto::NodePrivate::generate());
    ASSERT_TRUE(c.ok()) << "client " << i << ": " << c.error();
    cs.push_back(std::move(c).value());
  }
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == kN; }));
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < kN; i++) {
      Bytes p = patternBytes(200 + size_t(i) + size_t(round) * 1000, uint8_t(i + round));
      ASSERT_TRUE(cs[i]->sendPacket(cs[(i + 1) % kN]->publicKey(), p).ok());
    }
    for (int i = 0; i < kN; i++) {
      int from = (i + kN - 1) % kN;
      Bytes p = patternBytes(200 + size_t(from) + size_t(round) * 1000, uint8_t(from + round));
      ASSERT_TRUE(expectPacket(*cs[i], cs[from]->publicKey(), p)) << "client " << i << " round " << round;
    }
  }
  EXPECT_TRUE(waitForMetric(*w, "derp_packets_sent", [](double v) { return v == 3 * kN; }));
  cs.clear();
  EXPECT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 0; }));
  EXPECT_TRUE(waitForMetric(*w, "derp_clients_local", [](double v) { return v == 0; }));
}

}  // namespace
}  // namespace derpd::test
