// What an operator does by habit must not break derpd (issue: operator
// experience): a second derpd on the same runtime dir is refused and leaves
// the first unharmed; a bad manual certificate, a missing system user or a
// bad config value is one error line and exit 78 with nothing forked;
// root-only certificate files are served and rotated; systemd's notify
// socket and the journal's priority prefixes; the "gives up" line names the
// child's last error.
#include <gtest/gtest.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/harness.hpp"

namespace derpd::test {
namespace {

namespace fs = std::filesystem;

class OperatorTest : public WorkerTest {
 protected:
  // derpd in TLS mode (-certmode manual) for `hostname` from `certDir`.
  std::vector<std::string> tlsArgs(const std::string& certDir, const std::string& hostname = "localhost") {
    std::vector<std::string> a = derpdArgs();
    a.erase(std::find(a.begin(), a.end(), "-dev"));
    a.insert(a.end(), {"-c", writeServerKeyFile(), "-certmode", "manual", "-certdir", certDir, "-hostname", hostname,
                       "-http-port", "-1", "-stun=false", "--state-dir", tmp().path()});
    return a;
  }

  std::string makeSet(const std::string& name, long serial, const std::string& host = "localhost") {
    std::string dir = tmp().file(name);
    fs::create_directories(dir);
    CertOptions o;
    o.leafSerial = serial;
    auto c = makeTestCerts(dir, host, {host}, o);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error());
    return dir;
  }
};

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

size_t countErrorLines(const std::string& text) {
  size_t n = 0;
  for (const std::string& l : linesOf(text)) {
    if (l.find("] error: ") != std::string::npos || l.find("] critical: ") != std::string::npos) ++n;
  }
  return n;
}

void replaceArg(std::vector<std::string>& args, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == flag) {
      args[i + 1] = value;
      return;
    }
  }
  args.insert(args.end(), {flag, value});
}

long servedSerial(uint16_t port, const std::string& sni = "localhost") {
  TlsClientOptions t;
  t.serverName = sni;
  auto c = RawConn::dial(port, &t);
  if (!c.ok()) return -1;
  auto chain = (*c)->peerChain();
  if (chain.empty()) return -1;
  return ASN1_INTEGER_get(X509_get0_serialNumber(chain[0].get()));
}

// ---------------------------------------------------------------------------
// The runtime dir

TEST_F(OperatorTest, SecondDerpdOnTheSameRuntimeDirIsRefusedAndTheFirstIsUnharmed) {
  const std::vector<std::string> args = derpdArgs();
  WorkerProcess* first = startDerpd(args);
  ASSERT_NE(first, nullptr);
  const std::optional<std::string> runDirFlag = flagValue(args, "runtime-dir");
  ASSERT_TRUE(runDirFlag.has_value());
  const std::string runDir = *runDirFlag;
  ASSERT_TRUE(fs::exists(runDir + "/control.sock"));

  // Another relay (its own port from port 0) pointed at the same directory.
  int code = 0;
  const std::string out = runDerpdExpectingExit(args, &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("runtime dir " + runDir + " is in use by derpd pid " + std::to_string(first->pid())),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("started "), std::string::npos) << "the refused derpd forked a child:\n" << out;
  EXPECT_EQ(countErrorLines(out), 1u) << out;

  // The first one's socket is still there, and its next child restart works.
  EXPECT_TRUE(fs::exists(runDir + "/control.sock"));
  const pid_t worker = startedPid(*first, "derp-worker", 1);
  ASSERT_GT(worker, 0);
  allowErrorLine("derp-worker killed by signal 9 (Killed); restarting it");
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  ASSERT_TRUE(waitFor([&] { return startedPid(*first, "derp-worker", 2) > 0; }, Millis(10000)));
  ASSERT_TRUE(first->waitForLog("derp-worker is ready (pid " + std::to_string(startedPid(*first, "derp-worker", 2)),
                                Millis(10000)));
  std::unique_ptr<client::Client> alice, bob;
  ASSERT_TRUE(dialPairWithin(*first, alice, bob, Millis(10000)));
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("after the refused second derpd"))));
}

TEST_F(OperatorTest, DevRelaysOnDifferentAddressesGetTheirOwnRuntimeDirs) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: every unprivileged run already gets a private runtime dir";
  std::vector<WorkerProcess*> relays;
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> a = derpdArgs();
    // No --runtime-dir: derpd picks one for the address.
    auto it = std::find(a.begin(), a.end(), "--runtime-dir");
    a.erase(it, it + 2);
    const int port = reserveLoopbackPort();
    ASSERT_GT(port, 0);
    replaceArg(a, "-a", "127.0.0.1:" + std::to_string(port));
    WorkerProcess* w = startDerpd(a);
    ASSERT_NE(w, nullptr) << "dev relay " << i;
    EXPECT_TRUE(w->waitForLog("runtime dir /run/derpd-dev.127.0.0.1_" + std::to_string(port) + " ", Millis(1000)))
        << w->logText();
    relays.push_back(w);
  }
  for (WorkerProcess* w : relays) {
    DERPD_ASSERT_CONNECT(c, dial(*w, keys::alice()));
    EXPECT_TRUE(pingPong(*c, {1, 2, 3, 4, 5, 6, 7, 8}));
  }
  // A dev relay's directory goes with it.
  for (WorkerProcess* w : relays) {
    const std::string dir = "/run/derpd-dev.127.0.0.1_" + std::to_string(w->port());
    auto st = w->stop(SIGTERM);
    ASSERT_TRUE(st.ok()) << st.error();
    EXPECT_EQ(*st, 0);
    EXPECT_FALSE(fs::exists(dir)) << dir << " left behind";
  }
}

// ---------------------------------------------------------------------------
// Configuration errors: one line, exit 78, nothing forked

TEST_F(OperatorTest, BadManualCertificateIsOneErrorAndExit78WithNothingForked) {
  const std::string other = makeSet("other", 0x0701, "other.example");
  const std::string mismatch = makeSet("mismatch", 0x0702);
  const std::string good = makeSet("good", 0x0703);
  // The mismatched key: another set's key under this set's certificate.
  fs::copy_file(good + "/localhost.key", mismatch + "/localhost.key", fs::copy_options::overwrite_existing);
  // other.example's files under localhost's names: not valid for the name.
  const std::string wrongName = tmp().file("wrong-name");
  fs::create_directories(wrongName);
  fs::copy_file(other + "/other.example.crt", wrongName + "/localhost.crt");
  fs::copy_file(other + "/other.example.key", wrongName + "/localhost.key");
  struct Case {
    const char* what;
    std::string dir;
    std::string reason;
  };
  const Case cases[] = {
      {"missing files", tmp().file("empty-dir"), tmp().file("empty-dir") + "/localhost.crt: no such file"},
      {"wrong name", wrongName, "not valid for host name"},
      {"key mismatch", mismatch, "does not match"},
  };
  fs::create_directories(tmp().file("empty-dir"));
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    int code = 0;
    const std::string out = runDerpdExpectingExit(tlsArgs(c.dir), &code);
    EXPECT_EQ(code, 78) << out;
    EXPECT_EQ(countErrorLines(out), 1u) << out;
    EXPECT_NE(out.find(c.reason), std::string::npos) << out;
    EXPECT_NE(out.find(c.dir + "/localhost.crt"), std::string::npos) << "the files are not named:\n" << out;
    EXPECT_EQ(out.find("started "), std::string::npos) << "a child was forked:\n" << out;
    EXPECT_EQ(out.find("serving DERP"), std::string::npos) << out;
  }
}

TEST_F(OperatorTest, MissingSystemUserIsExit78WithHowToCreateIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: derpd drops no privileges, so it looks up no user";
  for (const char* flag : {"--user", "--cert-user"}) {
    SCOPED_TRACE(flag);
    std::vector<std::string> a = std::string(flag) == "--user" ? derpdArgs() : tlsArgs(makeSet("set", 0x0801));
    replaceArg(a, flag, "no-such-derpd-user");
    int code = 0;
    const std::string out = runDerpdExpectingExit(a, &code);
    EXPECT_EQ(code, 78) << out;
    EXPECT_EQ(countErrorLines(out), 1u) << out;
    EXPECT_NE(out.find("no-such-derpd-user"), std::string::npos) << out;
    EXPECT_NE(out.find("systemd-sysusers"), std::string::npos) << out;
    EXPECT_EQ(out.find("started "), std::string::npos) << "a child was forked:\n" << out;
  }
}

TEST_F(OperatorTest, ConfigFileErrorsNameFileAndLineAndExit78) {
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"# a comment\nlog-level = verbose\n", "bad.conf:2: log-level \"verbose\": want trace"},
      {"hostname = derp.example.com\n\ncertmode = manul\n", "bad.conf:3: certmode \"manul\" unsupported"},
      {"stun = yes\n", "bad.conf:1: invalid value \"yes\" for key \"stun\": parse error (want true or false"},
      {"http-port = 70000\n", "bad.conf:1: http-port 70000 out of range"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    const std::string conf = tmp().file("bad.conf");
    writeFile(conf, c.text);
    int code = 0;
    const std::string out = runDerpdExpectingExit({"--config", conf, "-a", "127.0.0.1:0"}, &code);
    EXPECT_EQ(code, 78) << out;
    EXPECT_NE(out.find(c.want), std::string::npos) << out;
    EXPECT_EQ(out.find("-log-level"), std::string::npos) << "names a flag the user never passed:\n" << out;
    EXPECT_EQ(out.find("-certmode"), std::string::npos) << out;
  }
  // The same value on the command line names the flag, and a command-line
  // syntax error keeps Go's flag status, 2.
  int code = 0;
  std::string out = runDerpdExpectingExit({"--config", "/dev/null", "-log-level", "verbose"}, &code);
  EXPECT_EQ(code, 78) << out;
  EXPECT_NE(out.find("-log-level \"verbose\""), std::string::npos) << out;
  out = runDerpdExpectingExit({"--config", "/dev/null", "-no-such-flag"}, &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("flag provided but not defined: -no-such-flag"), std::string::npos) << out;
}

// ---------------------------------------------------------------------------
// Root-only certificate files (certbot's privkey.pem, config management)

TEST_F(OperatorTest, RootOnlyCertificateFilesAreServedAndRotated) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: there is no privilege difference to test";
  // As certbot lays them out: a root-only live/ dir of links into archive/.
  const std::string setA = makeSet("setA", 0xA101);
  const std::string archive = tmp().file("archive");
  const std::string live = tmp().file("live");
  fs::create_directories(archive);
  fs::create_directories(live);
  fs::copy_file(setA + "/localhost.crt", archive + "/fullchain1.pem");
  fs::copy_file(setA + "/localhost.key", archive + "/privkey1.pem");
  fs::create_symlink(archive + "/fullchain1.pem", live + "/localhost.crt");
  fs::create_symlink(archive + "/privkey1.pem", live + "/localhost.key");
  for (const std::string& p : {archive, live}) ASSERT_EQ(::chmod(p.c_str(), 0700), 0);
  for (const char* f : {"/fullchain1.pem", "/privkey1.pem"}) ASSERT_EQ(::chmod((archive + f).c_str(), 0600), 0);

  WorkerProcess* w = startDerpd(tlsArgs(live));
  ASSERT_NE(w, nullptr);
  w->setTlsClientInfo("localhost", setA + "/ca.crt");
  ASSERT_TRUE(w->waitForLog("TLS certificate in service for new handshakes: serial A101 ", Millis(10000))) << w->logText();
  EXPECT_EQ(servedSerial(w->port()), 0xA101);
  // Not -dev: the serving line does not say dev mode.
  EXPECT_TRUE(w->waitForLog("serving DERP on https://", Millis(1000)));
  EXPECT_EQ(w->logText().find("(dev mode)"), std::string::npos);
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
  ASSERT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("root-only files"))));

  // certbot renew: new archive files, the links replaced; then SIGHUP.
  const std::string setB = makeSet("setB", 0xB102);
  fs::copy_file(setB + "/localhost.crt", archive + "/fullchain2.pem");
  fs::copy_file(setB + "/localhost.key", archive + "/privkey2.pem");
  for (const char* f : {"/fullchain2.pem", "/privkey2.pem"}) ASSERT_EQ(::chmod((archive + f).c_str(), 0600), 0);
  fs::create_symlink(archive + "/fullchain2.pem", live + "/.crt.new");
  fs::create_symlink(archive + "/privkey2.pem", live + "/.key.new");
  fs::rename(live + "/.key.new", live + "/localhost.key");
  fs::rename(live + "/.crt.new", live + "/localhost.crt");
  // The link swap is a change in certdir: cert-agent's watch asks derpd to
  // read the files again; SIGHUP does too. Either way: serial B102.
  ASSERT_EQ(::kill(w->pid(), SIGHUP), 0);
  ASSERT_TRUE(w->waitForLog("TLS certificate in service for new handshakes: serial B102 ", Millis(10000))) << w->logText();
  EXPECT_EQ(servedSerial(w->port()), 0xB102);
  EXPECT_TRUE(exchange(*alice, *bob, asBytes(std::string_view("after the rotation"))));
  allowErrorLine("new certificate refused");  // if the two renames straddled the settle time
}

TEST_F(OperatorTest, RootOnlyFileChangeRotatesWithoutSignal) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: there is no privilege difference to test";
  const std::string dir = makeSet("certs", 0xC101);
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod((dir + "/localhost.key").c_str(), 0600), 0);
  WorkerProcess* w = startDerpd(tlsArgs(dir));
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->waitForLog("TLS certificate in service for new handshakes: serial C101 ", Millis(10000)));
  const std::string setD = makeSet("setD", 0xD102);
  for (const char* ext : {".key", ".crt"}) {
    const std::string to = dir + "/localhost" + ext;
    fs::copy_file(setD + "/localhost" + ext, to + ".new");
    ASSERT_EQ(::chmod((to + ".new").c_str(), 0600), 0);
    fs::rename(to + ".new", to);
  }
  ASSERT_TRUE(w->waitForLog("TLS certificate in service for new handshakes: serial D102 ", Millis(10000))) << w->logText();
  EXPECT_EQ(servedSerial(w->port()), 0xD102);
  allowErrorLine("new certificate refused");  // if the two renames straddled the settle time
}

// A certdir that cert-user can write to is read with cert-user's file-system
// ids: a link planted there does not make derpd (root) read a root-only file.
TEST_F(OperatorTest, CertUserWritableDirIsReadAsCertUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: there is no privilege difference to test";
  const std::string set = makeSet("set", 0x0E01);
  const std::string secret = tmp().file("secret");
  fs::create_directories(secret);
  ASSERT_EQ(::chmod(secret.c_str(), 0700), 0);
  fs::copy_file(set + "/localhost.key", secret + "/root-only.key");
  ASSERT_EQ(::chmod((secret + "/root-only.key").c_str(), 0600), 0);
  const std::string certDir = tmp().file("cert-user-dir");
  fs::create_directories(certDir);
  fs::copy_file(set + "/localhost.crt", certDir + "/localhost.crt");
  fs::create_symlink(secret + "/root-only.key", certDir + "/localhost.key");
  passwd* pw = ::getpwnam("nobody");
  ASSERT_NE(pw, nullptr);
  ASSERT_EQ(::chown(certDir.c_str(), pw->pw_uid, pw->pw_gid), 0);
  ASSERT_EQ(::chmod(tmp().path().c_str(), 0755), 0);
  int code = 0;
  const std::string out = runDerpdExpectingExit(tlsArgs(certDir), &code);
  EXPECT_EQ(code, 78) << out;
  EXPECT_NE(out.find(certDir + "/localhost.key: Permission denied"), std::string::npos) << out;
  EXPECT_NE(out.find("reads it as cert-user"), std::string::npos) << out;
}

// ---------------------------------------------------------------------------
// "derpd gives up" names the child's last error

TEST_F(OperatorTest, GiveUpLineNamesTheChildsLastError) {
  // A mesh CA file that does not exist: derp-worker fails at every start
  // (derpd does not look into it).
  std::vector<std::string> a = derpdArgs();
  a.insert(a.end(), {"-mesh-psk-file", writeMeshKeyFile(), "-mesh-with", "127.0.0.1:1", "--mesh-ca-file",
                     tmp().file("no-such-ca.pem")});
  WorkerProcess p;
  auto r = p.start(a, binDir() + "/derpd");
  EXPECT_FALSE(r.ok());
  ASSERT_TRUE(waitFor([&] { return !p.running(); }, Millis(30000)));
  EXPECT_EQ(p.exitStatus().value_or(0), 1);
  const std::string out = p.logText();
  std::string giveUp;
  for (const std::string& l : linesOf(out)) {
    if (l.find("derpd gives up") != std::string::npos) giveUp = l;
  }
  ASSERT_FALSE(giveUp.empty()) << out;
  EXPECT_NE(giveUp.find("derp-worker cannot start"), std::string::npos) << giveUp;
  EXPECT_NE(giveUp.find("its last error: "), std::string::npos) << giveUp;
  EXPECT_NE(giveUp.find("no-such-ca.pem"), std::string::npos) << giveUp;
}

// Connects and disconnects are summarised at info level (derper logs each
// connection; here one line per 10 s in which something changed).
TEST_F(OperatorTest, ConnectsAndDisconnectsAreSummarisedAtInfoLevel) {
  std::vector<std::string> a = derpdArgs();
  replaceArg(a, "--log-level", "info");
  WorkerProcess* w = startDerpd(a);
  ASSERT_NE(w, nullptr);
  {
    DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
    DERPD_ASSERT_CONNECT(bob, dial(*w, keys::bob()));
    ASSERT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 2; }));
  }
  ASSERT_TRUE(waitForMetric(*w, "derp_current_connections", [](double v) { return v == 0; }));
  // Both within one summary interval or spread over two: the counts add up.
  ASSERT_TRUE(w->waitForLog("info: clients: 0 connected; in the last ", Millis(25000))) << w->logText();
  static const std::regex kSummary(R"(info: clients: ([0-9]+) connected; in the last [0-9]+ s ([0-9]+) connected and ([0-9]+) disconnected)");
  int joined = 0, left = 0;
  const std::string log = w->logText();
  for (std::sregex_iterator it(log.begin(), log.end(), kSummary), end; it != end; ++it) {
    joined += std::stoi((*it)[2].str());
    left += std::stoi((*it)[3].str());
  }
  EXPECT_EQ(joined, 2) << log;
  EXPECT_EQ(left, 2) << log;
}

// ---------------------------------------------------------------------------
// systemd: the notify socket and the journal

// A datagram socket standing in for systemd's $NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool ok() const { return ok_; }
  // Reads datagrams until one contains `needle` (true) or `timeout` passes.
  bool waitFor(std::string_view needle, Millis timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; i < 10000; ++i) {
      for (size_t k = seen_; k < messages_.size(); ++k) {
        if (messages_[k].find(needle) != std::string::npos) {
          seen_ = k + 1;
          return true;
        }
      }
      seen_ = messages_.size();
      auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, int(left)) != 1) return false;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) messages_.emplace_back(buf, size_t(n));
    }
    return false;
  }
  const std::vector<std::string>& messages() const { return messages_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
  std::vector<std::string> messages_;
  size_t seen_ = 0;  // messages already matched or passed over
};

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& m : v) s += "[" + m + "] ";
  return s;
}

TEST_F(OperatorTest, NotifySocketHearsReadyReloadingAndStoppingInOrder) {
  NotifySocket sock(tmp().file("notify.sock"));
  ASSERT_TRUE(sock.ok());
  ::setenv("NOTIFY_SOCKET", tmp().file("notify.sock").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "1000000", 1);  // WatchdogSec=1s: a ping every 0.5 s
  WorkerProcess* w = startDerpd(derpdArgs());
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_NE(w, nullptr);
  // READY=1 only once every required role said Ready.
  ASSERT_TRUE(sock.waitFor("READY=1", Millis(10000))) << joined(sock.messages());
  for (const char* role : {"derp-worker", "stun-worker"}) {
    const std::string log = w->logText();
    EXPECT_NE(log.find(std::string(role) + " is ready"), std::string::npos) << role;
  }
  EXPECT_EQ(sock.messages().front().find("READY=1"), std::string::npos)
      << "READY=1 was the first message, before any STATUS: " << joined(sock.messages());
  // systemd's watchdog is pinged from derpd's loop while the children answer.
  EXPECT_TRUE(sock.waitFor("WATCHDOG=1", Millis(5000))) << joined(sock.messages());
  DERPD_ASSERT_CONNECT(alice, dial(*w, keys::alice()));
  // derp-worker reports its client count about once a second.
  EXPECT_TRUE(sock.waitFor("STATUS=serving 1 client", Millis(10000))) << joined(sock.messages());

  ASSERT_EQ(::kill(w->pid(), SIGHUP), 0);
  ASSERT_TRUE(sock.waitFor("RELOADING=1", Millis(10000))) << joined(sock.messages());
  EXPECT_NE(sock.messages().back().find("MONOTONIC_USEC="), std::string::npos) << sock.messages().back();
  ASSERT_TRUE(sock.waitFor("READY=1", Millis(10000))) << joined(sock.messages());

  auto st = w->stop(SIGTERM);
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_EQ(*st, 0);
  EXPECT_TRUE(sock.waitFor("STOPPING=1", Millis(1000))) << joined(sock.messages());
}

// Journal lines: "<N>role[pid] level: message", no timestamp; an error is
// priority 3, whichever process logged it.
void expectJournalLines(const std::string& log) {
  static const std::regex kLine(R"(^<([0-7])>([a-z-]+)\[[0-9]+\] (trace|debug|info|warning|error|critical): .*)");
  size_t n = 0, children = 0, errors = 0;
  for (const std::string& l : linesOf(log)) {
    // The sanitizer runtime's own lines ("==pid==...") are not derpd's.
    if (l.empty() || l.rfind("==", 0) == 0) continue;
    std::smatch m;
    ASSERT_TRUE(std::regex_match(l, m, kLine)) << "not a journal line: " << l;
    ++n;
    if (m[2] != "derpd") ++children;
    if (m[3] == "error") {
      EXPECT_EQ(m[1], "3") << l;
      ++errors;
    }
    const std::string want = m[3] == "info" ? "6" : m[3] == "debug" ? "7" : m[3] == "warning" ? "4" : m[1].str();
    EXPECT_EQ(m[1].str(), want) << l;
  }
  EXPECT_GT(n, 10u);
  EXPECT_GT(children, 0u) << "no child's line in the journal format";
  EXPECT_GT(errors, 0u) << "the provoked error line is missing";
}

TEST_F(OperatorTest, JournalFormatCarriesPrioritiesAndNoTimestamps) {
  std::vector<std::string> a = derpdArgs();
  a.insert(a.end(), {"--log-format", "journal"});
  WorkerProcess* w = startDerpd(a);
  ASSERT_NE(w, nullptr);
  // An error on purpose: stun-worker killed.
  const pid_t stun = startedPid(*w, "stun-worker", 1);
  ASSERT_GT(stun, 0);
  allowErrorLine("stun-worker killed by signal 9 (Killed); restarting it");
  ASSERT_EQ(::kill(stun, SIGKILL), 0);
  ASSERT_TRUE(w->waitForLog("error: stun-worker killed by signal 9", Millis(5000)));
  ASSERT_TRUE(waitFor([&] { return startedPid(*w, "stun-worker", 2) > 0; }, Millis(10000)));
  expectJournalLines(w->logText());
}

TEST_F(OperatorTest, JournalStreamOnStderrSelectsTheJournalFormat) {
  // As systemd starts it: JOURNAL_STREAM names the stream that stderr is.
  std::string cmd = "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"";
  std::vector<std::string> a = {"-c", cmd, binDir() + "/derpd"};
  for (const std::string& s : derpdArgs()) a.push_back(s);
  WorkerProcess p;
  auto r = p.start(a, "/bin/sh");
  ASSERT_TRUE(r.ok()) << r.error() << "\n" << p.logText();
  const pid_t stun = startedPid(p, "stun-worker", 1);
  ASSERT_GT(stun, 0);
  ASSERT_EQ(::kill(stun, SIGKILL), 0);
  ASSERT_TRUE(p.waitForLog("error: stun-worker killed by signal 9", Millis(5000)));
  ASSERT_TRUE(waitFor([&] { return startedPid(p, "stun-worker", 2) > 0; }, Millis(10000)));
  auto st = p.stop(SIGTERM);
  ASSERT_TRUE(st.ok()) << st.error();
  EXPECT_EQ(*st, 0);
  expectJournalLines(p.logText());
  // Not under the journal (the same start without the variable): timestamps.
  EXPECT_EQ(p.logText().find("Z derpd["), std::string::npos);
}

}  // namespace
}  // namespace derpd::test
