// Client verification (PROTOCOL.md §5.9) through the real derpd: derp-worker
// asks mesh-helper, which asks an admission controller (-verify-client-url)
// and/or tailscaled's LocalAPI (-verify-clients). Both are fakes started by
// the test. A rejected client is closed without a frame; mesh peers are
// never asked about; when nobody can answer, the fail-open setting decides.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/admission_fakes.hpp"
#include "support/harness.hpp"

namespace derpd::test {
namespace {

using Mode = FakeAdmissionServer::Mode;

class AdmissionTest : public WorkerTest {
 protected:
  WorkerProcess* start(const std::vector<std::string>& extra) {
    if (::geteuid() == 0) {
      // mesh-helper runs as nobody: it must reach a socket in tmp().
      EXPECT_EQ(::chmod(tmp().path().c_str(), 0755), 0);
    }
    std::vector<std::string> a = derpdArgs();
    a.insert(a.end(), {"-stun=false", "-mesh-psk-file", writeMeshKeyFile()});
    a.insert(a.end(), extra.begin(), extra.end());
    return startDerpd(a);
  }
  // The client is admitted: the handshake completes and it relays.
  ::testing::AssertionResult admitted(const WorkerProcess& w, const crypto::NodePrivate& key) {
    auto c = dial(w, key);
    if (!c.ok()) return ::testing::AssertionFailure() << "refused: " << c.error();
    auto peer = dial(w, keys::carol());
    if (!peer.ok()) return ::testing::AssertionFailure() << "carol refused: " << peer.error();
    return exchange(**c, **peer, asBytes(std::string_view("admitted")));
  }
  // The client is closed after its ClientInfo, with no ServerInfo.
  static ::testing::AssertionResult rejected(const WorkerProcess& w, const crypto::NodePrivate& key) {
    auto c = dial(w, key);
    if (c.ok()) return ::testing::AssertionFailure() << "admitted";
    if (c.error().find("ServerInfo") == std::string::npos) {
      return ::testing::AssertionFailure() << "failed, but not at ServerInfo: " << c.error();
    }
    return ::testing::AssertionSuccess();
  }
};

TEST_F(AdmissionTest, AdmissionUrlVerdictsFailOpenAndMeshPeersExempt) {
  FakeAdmissionServer admit(Mode::Allow);
  WorkerProcess* w = start({"-verify-client-url", admit.url()});
  ASSERT_NE(w, nullptr);
  // carol (the peer in admitted()) is asked about too: allow her first.
  EXPECT_TRUE(admitted(*w, keys::alice()));
  ASSERT_GE(admit.requestCount(), 1u);
  RecordedRequest first = admit.requests()[0];
  EXPECT_EQ(first.method, "POST");
  EXPECT_EQ(first.body, "{\"NodePublic\":\"" + keys::alice().publicKey().toText() + "\",\"Source\":\"127.0.0.1\"}");

  admit.setMode(Mode::Deny);
  EXPECT_TRUE(rejected(*w, keys::bob()));
  admit.setMode(Mode::Garbage);
  EXPECT_TRUE(rejected(*w, keys::bob()));
  admit.setMode(Mode::Status500);
  EXPECT_TRUE(rejected(*w, keys::bob()));
  EXPECT_TRUE(waitForMetric(*w, "derpd_conn_closes{reason=\"rejected\"}", [](double v) { return v == 3; }));
  EXPECT_TRUE(w->waitForLog("rejected: admission controller: 500", kIoTimeout));

  // Mesh peers are trusted without a question, even while the URL says no.
  const size_t before = admit.requestCount();
  DERPD_ASSERT_CONNECT(m, dial(*w, keys::mesh(), [](client::ClientOptions& o) { o.meshKey = kMeshKey; }));
  EXPECT_EQ(admit.requestCount(), before);

  // No answer within 5 s: fail-open (the default) admits.
  admit.setMode(Mode::Hang);
  auto c = dial(*w, keys::bob(), [](client::ClientOptions& o) { o.timeout = Millis(15000); });
  EXPECT_TRUE(c.ok()) << c.error();
  EXPECT_TRUE(w->waitForLog("admission controller unreachable; allowing client", kIoTimeout));
}

TEST_F(AdmissionTest, FailClosedRefusesWhenTheUrlDoesNotAnswer) {
  FakeAdmissionServer admit(Mode::Hang);
  WorkerProcess* w = start({"-verify-client-url", admit.url(), "-verify-client-url-fail-open=false"});
  ASSERT_NE(w, nullptr);
  auto c = dial(*w, keys::alice(), [](client::ClientOptions& o) { o.timeout = Millis(15000); });
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("ServerInfo"), std::string::npos) << c.error();
  admit.setMode(Mode::Allow);
  EXPECT_TRUE(admitted(*w, keys::alice()));
}

TEST_F(AdmissionTest, UnreachableUrlFailOpenAdmits) {
  const int refused = reserveLoopbackPort();
  WorkerProcess* w = start({"-verify-client-url", "http://127.0.0.1:" + std::to_string(refused) + "/admit"});
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(admitted(*w, keys::alice()));
  EXPECT_TRUE(waitForMetric(*w, "derpd_verify_answers{verdict=\"allow\"}", [](double v) { return v >= 2; }));
}

// tailscaled's LocalAPI: known keys in, unknown out, a too-old tailscaled
// refuses everyone (with derper's message); with both checks, the LocalAPI
// goes first and a refusal there never reaches the URL.
TEST_F(AdmissionTest, LocalApiVerdictsAndBothChecks) {
  FakeLocalApi api(tmp().file("tailscaled.sock"));
  api.addKnownKey(keys::alice().publicKey());
  api.addKnownKey(keys::carol().publicKey());
  FakeAdmissionServer admit(Mode::Allow);
  WorkerProcess* w = start({"-verify-clients", "--verify-clients-socket", api.socketPath(),
                            "-verify-client-url", admit.url()});
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(admitted(*w, keys::alice()));
  ASSERT_GE(api.requestCount(), 1u);
  RecordedRequest q = api.requests()[0];
  EXPECT_EQ(q.target, "/localapi/v0/whois?addr=nodekey%3A" + keys::alice().publicKey().toHex());
  ASSERT_NE(q.header("Tailscale-Cap"), nullptr);
  const size_t urlAsked = admit.requestCount();
  EXPECT_EQ(urlAsked, 2u);  // alice and carol passed the LocalAPI

  EXPECT_TRUE(rejected(*w, keys::bob()));  // unknown to tailscaled
  EXPECT_TRUE(w->waitForLog("not found in local tailscaled", kIoTimeout));
  EXPECT_EQ(admit.requestCount(), urlAsked);

  admit.setMode(Mode::Deny);  // known to tailscaled, refused by the URL
  EXPECT_TRUE(rejected(*w, keys::alice()));

  api.setTooOld(true);
  admit.setMode(Mode::Allow);
  EXPECT_TRUE(rejected(*w, keys::alice()));
  EXPECT_TRUE(w->waitForLog("tailscaled version is too old", kIoTimeout));
}

// mesh-helper stopped (SIGSTOP): derp-worker stops waiting after 12 s and
// the fail-open setting decides; after SIGCONT answers flow again.
TEST_F(AdmissionTest, SilentMeshHelperLeavesItToFailOpen) {
  FakeAdmissionServer admit(Mode::Allow);
  // The child-watchdog would replace the stopped mesh-helper after 10 s;
  // this test is about derp-worker's own 12 s limit.
  WorkerProcess* w = start({"-verify-client-url", admit.url(), "-verify-client-url-fail-open=false",
                            "--child-watchdog", "0"});
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->waitForLog("mesh-helper is ready", kIoTimeout));
  const pid_t helper = startedPid(*w, "mesh-helper", 1);
  ASSERT_GT(helper, 0);
  ASSERT_EQ(::kill(helper, SIGSTOP), 0);
  auto c = dial(*w, keys::alice(), [](client::ClientOptions& o) { o.timeout = Millis(20000); });
  EXPECT_FALSE(c.ok());
  EXPECT_TRUE(w->waitForLog("no admission answer (mesh-helper did not answer within 12 s); refusing it", kIoTimeout));
  ASSERT_EQ(::kill(helper, SIGCONT), 0);
  EXPECT_TRUE(admitted(*w, keys::alice()));
}

}  // namespace
}  // namespace derpd::test
