#include "common/config/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace derpd::config {
namespace {

using namespace std::chrono_literals;

// A fixed environment: HOME=/home/test, nothing else, no files exist.
Env testEnv(std::map<std::string, std::string> vars = {{"HOME", "/home/test"}},
            std::set<std::string> files = {}) {
  Env e;
  e.getenv = [vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  e.fileExists = [files](const std::string& p) { return files.count(p) > 0; };
  return e;
}

// --config pointing nowhere-in-particular would read the real default path;
// every loadConfig test names a file or a missing default.
class ConfigFlags : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("derpd-config-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const auto p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  // Flags with --config naming an absent file replaced by an empty one, so the
  // host's /etc/derpd/derpd.conf never leaks in.
  Result<Config> load(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", write("empty.conf", "")});
    return loadConfig(args, testEnv());
  }

  std::filesystem::path dir_;
};

TEST(ConfigDefaults, EqualDerpers) {
  const Config c = defaultConfig(testEnv());
  EXPECT_EQ(c.addr, ":443");
  EXPECT_EQ(c.httpPort, 80);
  EXPECT_EQ(c.stunPort, 3478);
  EXPECT_TRUE(c.stun);
  EXPECT_TRUE(c.derp);
  EXPECT_FALSE(c.dev);
  EXPECT_EQ(c.keyFile, "");
  EXPECT_EQ(c.certMode, "letsencrypt");
  EXPECT_EQ(c.certDir, "/home/test/.cache/tailscale/derper-certs");
  EXPECT_EQ(c.hostname, "derp.tailscale.com");
  EXPECT_EQ(c.meshPskFile, "");
  EXPECT_EQ(c.meshWith, "");
  EXPECT_EQ(c.bootstrapDnsNames, "");
  EXPECT_EQ(c.unpublishedBootstrapDnsNames, "");
  EXPECT_FALSE(c.verifyClients);
  EXPECT_EQ(c.verifyClientUrl, "");
  EXPECT_TRUE(c.verifyClientUrlFailOpen);
  EXPECT_TRUE(std::isinf(c.acceptConnectionLimit) && c.acceptConnectionLimit > 0);
  EXPECT_EQ(c.acceptConnectionBurst, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(c.tcpKeepaliveTime, 10min);
  EXPECT_EQ(c.tcpUserTimeout, 15s);
  EXPECT_FALSE(c.version);
  EXPECT_EQ(c.configFile, "/etc/derpd/derpd.conf");
  EXPECT_EQ(c.user, "_derpd");
  EXPECT_EQ(c.certUser, "_derpd-cert");
  EXPECT_EQ(c.runtimeDir, "/run/derpd");
  EXPECT_EQ(c.stateDir, "/var/lib/derpd");
  EXPECT_EQ(c.logFile, "");
  EXPECT_EQ(c.logLevel, "info");
  EXPECT_EQ(c.threads, 0);
  EXPECT_EQ(c.drainTimeout, 5s);
  EXPECT_FALSE(c.help);
  EXPECT_TRUE(c.origins.empty());
  EXPECT_TRUE(validate(c).ok());
}

TEST(ConfigDefaults, CertDirFollowsUserCacheDir) {
  EXPECT_EQ(defaultConfig(testEnv({{"XDG_CACHE_HOME", "/xdg/"}, {"HOME", "/h"}})).certDir,
            "/xdg/tailscale/derper-certs");
  EXPECT_EQ(defaultConfig(testEnv({{"XDG_CACHE_HOME", ""}, {"HOME", "/h"}})).certDir,
            "/h/.cache/tailscale/derper-certs");
  // os.UserCacheDir fails: relative XDG_CACHE_HOME, or neither variable set.
  EXPECT_EQ(defaultConfig(testEnv({{"XDG_CACHE_HOME", "rel"}, {"HOME", "/h"}})).certDir, "");
  EXPECT_EQ(defaultConfig(testEnv({})).certDir, "");
}

TEST(ConfigDefaults, MeshPskFileSearch) {
  EXPECT_EQ(defaultConfig(testEnv({{"HOME", "/h"}}, {"/home/derp/keys/derp-mesh.key",
                                                      "/h/keys/derp-mesh.key"}))
                .meshPskFile,
            "/home/derp/keys/derp-mesh.key");
  EXPECT_EQ(defaultConfig(testEnv({{"HOME", "/h/"}}, {"/h/keys/derp-mesh.key"})).meshPskFile,
            "/h/keys/derp-mesh.key");
  EXPECT_EQ(defaultConfig(testEnv({{"HOME", "/h"}}, {})).meshPskFile, "");
  // filepath.Join("", "keys", ...) is relative.
  EXPECT_EQ(defaultConfig(testEnv({}, {"keys/derp-mesh.key"})).meshPskFile, "keys/derp-mesh.key");
}

TEST(ConfigDefaults, KeyNamesSortedAndComplete) {
  const auto& names = keyNames();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(names.size(), 52u);
  for (const char* k : {"a", "http-port", "stun-port", "stun", "derp", "dev", "c", "certmode",
                        "certdir", "hostname", "mesh-psk-file", "mesh-with", "bootstrap-dns-names",
                        "unpublished-bootstrap-dns-names", "verify-clients", "verify-client-url",
                        "verify-client-url-fail-open", "accept-connection-limit",
                        "accept-connection-burst", "tcp-keepalive-time", "tcp-user-timeout",
                        "version", "config", "user", "cert-user", "runtime-dir", "state-dir",
                        "acme-directory-url", "acme-ca-file", "acme-challenges", "acme-email",
                        "acme-eab-kid", "acme-eab-key", "force-tls", "mesh-ca-file", "verify-clients-socket",
                        "log-file", "log-level", "threads", "drain-timeout", "max-connections", "max-handshakes",
                        "monitor", "monitor-ca-file", "monitor-derp-map", "monitor-interval", "monitor-listen",
                        "seccomp"}) {
    EXPECT_TRUE(std::find(names.begin(), names.end(), k) != names.end()) << k;
  }
}

TEST_F(ConfigFlags, Syntaxes) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"-a", ":8443"}, {"--a", ":8443"}, {"-a=:8443"}, {"--a=:8443"}}) {
    auto c = load(args);
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->addr, ":8443");
    EXPECT_EQ(c->originOf("a").describe("a"), "flag -a");
  }
  // A non-bool flag takes the next argument even when it starts with '-'.
  auto c = load({"-hostname", "-weird"});
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->hostname, "-weird");
  // Later flags win; '=' inside the value is kept.
  c = load({"-hostname=a", "-hostname=b=c"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->hostname, "b=c");
  // Empty value with '='.
  c = load({"-c="});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->keyFile, "");
  // "--" ends the flags.
  c = load({"-dev", "--"});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->dev);
}

TEST_F(ConfigFlags, BoolRules) {
  auto c = load({"-dev", "-stun=false", "--derp=0", "-verify-clients=T", "-verify-client-url-fail-open=F"});
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_TRUE(c->dev);
  EXPECT_FALSE(c->stun);
  EXPECT_FALSE(c->derp);
  EXPECT_TRUE(c->verifyClients);
  EXPECT_FALSE(c->verifyClientUrlFailOpen);
  // A bool does not consume the next argument.
  auto r = load({"-stun", "false"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "unexpected argument \"false\" (derpd takes only flags)");
  r = load({"-dev=yes"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(),
            "invalid boolean value \"yes\" for -dev: parse error (want true or false; also 1, 0, t, f, T, F, TRUE, "
            "FALSE, True, False)");
  for (const char* t : {"1", "t", "T", "true", "TRUE", "True"}) EXPECT_TRUE(*parseGoBool(t)) << t;
  for (const char* f : {"0", "f", "F", "false", "FALSE", "False"}) EXPECT_FALSE(*parseGoBool(f)) << f;
  EXPECT_FALSE(parseGoBool("tRuE").ok());
  EXPECT_FALSE(parseGoBool("").ok());
}

TEST_F(ConfigFlags, Help) {
  for (const char* h : {"-h", "-help", "--help", "--h"}) {
    auto c = loadConfig({"-dev", h, "-nonsense"}, testEnv());
    ASSERT_TRUE(c.ok()) << h;
    EXPECT_TRUE(c->help);
  }
  EXPECT_FALSE(load({}).value().help);
}

TEST_F(ConfigFlags, UnknownAndBadSyntax) {
  auto r = load({"-foo"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "flag provided but not defined: -foo");
  r = load({"--foo=1"});
  EXPECT_EQ(r.error(), "flag provided but not defined: -foo");
  r = load({"---a"});
  EXPECT_EQ(r.error(), "bad flag syntax: ---a");
  r = load({"-=x"});
  EXPECT_EQ(r.error(), "bad flag syntax: -=x");
  r = load({"-a"});
  EXPECT_EQ(r.error(), "flag needs an argument: -a");
  r = load({"positional"});
  EXPECT_EQ(r.error(), "unexpected argument \"positional\" (derpd takes only flags)");
  r = load({"-"});
  EXPECT_FALSE(r.ok());
  r = load({"--", "x"});
  EXPECT_FALSE(r.ok());
  // HEAD-only derper flags are not accepted yet.
  r = load({"-tcp-write-timeout=2s"});
  EXPECT_EQ(r.error(), "flag provided but not defined: -tcp-write-timeout");
}

TEST_F(ConfigFlags, BadValuesNameTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string err;
  };
  const std::vector<Case> cases = {
      {{"-http-port", "eighty"}, "invalid value \"eighty\" for flag -http-port: parse error"},
      {{"-http-port=99999999999"}, "invalid value \"99999999999\" for flag -http-port: value out of range"},
      {{"-stun-port=1.5"}, "invalid value \"1.5\" for flag -stun-port: parse error"},
      {{"-tcp-keepalive-time=10"}, "invalid value \"10\" for flag -tcp-keepalive-time: time: missing unit in duration \"10\""},
      {{"-tcp-user-timeout=5x"}, "invalid value \"5x\" for flag -tcp-user-timeout: time: unknown unit \"x\" in duration \"5x\""},
      {{"-accept-connection-limit=lots"}, "invalid value \"lots\" for flag -accept-connection-limit: parse error"},
      {{"-accept-connection-limit=NaN"}, "invalid value \"NaN\" for flag -accept-connection-limit: NaN is not allowed"},
      {{"-accept-connection-burst=9223372036854775808"}, "invalid value \"9223372036854775808\" for flag -accept-connection-burst: value out of range"},
      {{"-threads="}, "invalid value \"\" for flag -threads: parse error"},
      {{"-drain-timeout", ""}, "invalid value \"\" for flag -drain-timeout: time: invalid duration \"\""},
  };
  for (const Case& c : cases) {
    auto r = load(c.args);
    ASSERT_FALSE(r.ok()) << c.args[0];
    EXPECT_EQ(r.error(), c.err);
  }
}

TEST_F(ConfigFlags, Validation) {
  struct Case {
    std::vector<std::string> args;
    std::string err;
  };
  const std::vector<Case> cases = {
      {{"-http-port=65536"}, "-http-port 65536 out of range (-1 to 65535)"},
      {{"-http-port=-2"}, "-http-port -2 out of range (-1 to 65535)"},
      {{"-stun-port=-1"}, "-stun-port -1 out of range (0 to 65535)"},
      {{"-stun-port=70000"}, "-stun-port 70000 out of range (0 to 65535)"},
      {{"-certmode=gcp"}, "-certmode \"gcp\" unsupported (manual or letsencrypt)"},
      {{"-mesh-with=a,b"}, "-mesh-with requires -mesh-psk-file"},
      {{"-verify-client-url=ftp://x"}, "-verify-client-url \"ftp://x\" must be an http:// or https:// URL with a host"},
      {{"-verify-client-url=http://"}, "-verify-client-url \"http://\" must be an http:// or https:// URL with a host"},
      {{"-a=443"}, "-a \"443\": missing port"},
      {{"-a=::1:443"}, "-a \"::1:443\": an IPv6 address needs brackets, \"[ip6]:port\""},
      {{"-a=:65536"}, "-a \":65536\": port out of range (0 to 65535)"},
      {{"-a=[::1]443"}, "-a \"[::1]443\": want \"[ip6]:port\""},
      {{"-accept-connection-limit=-1"}, "-accept-connection-limit must not be negative"},
      {{"-accept-connection-burst=-1"}, "-accept-connection-burst must not be negative"},
      {{"-log-level=loud"}, "-log-level \"loud\": want trace, debug, info, warn or error"},
      {{"-threads=257"}, "-threads 257 out of range (0 to 256)"},
      {{"-drain-timeout=-1s"}, "-drain-timeout must not be negative"},
      {{"-user="}, "-user must not be empty"},
      {{"-runtime-dir=run"}, "-runtime-dir \"run\" must be an absolute path"},
      {{"-hostname=a\nb"}, "-hostname: value contains a newline or NUL byte"},
  };
  for (const Case& c : cases) {
    auto r = load(c.args);
    ASSERT_FALSE(r.ok()) << c.args[0];
    EXPECT_EQ(r.error(), c.err);
  }
  for (auto ok : std::vector<std::vector<std::string>>{
           {"-http-port=-1"}, {"-http-port=0"}, {"-stun-port=0"}, {"-certmode=manual"},
           {"-mesh-with=a", "-mesh-psk-file=/k"}, {"-verify-client-url=HTTPS://x/y"},
           {"-a=[::1]:443"}, {"-a=127.0.0.1:https"}, {"-a=:0"}, {"-drain-timeout=0"}}) {
    auto r = load(ok);
    EXPECT_TRUE(r.ok()) << ok[0] << ": " << r.error();
  }
}

TEST(ConfigValues, Durations) {
  EXPECT_EQ(*parseGoDuration("10m"), 10min);
  EXPECT_EQ(*parseGoDuration("15s"), 15s);
  EXPECT_EQ(*parseGoDuration("1h30m"), 90min);
  EXPECT_EQ(*parseGoDuration("500ms"), 500ms);
  EXPECT_EQ(*parseGoDuration("0"), 0s);
  EXPECT_EQ(*parseGoDuration("-0"), 0s);
  EXPECT_EQ(*parseGoDuration("+5s"), 5s);
  EXPECT_EQ(*parseGoDuration("-1.5h"), -90min);
  EXPECT_EQ(*parseGoDuration("1.5s"), 1500ms);
  EXPECT_EQ(*parseGoDuration(".5s"), 500ms);
  EXPECT_EQ(*parseGoDuration("1.s"), 1s);
  EXPECT_EQ(*parseGoDuration("3us"), 3us);
  EXPECT_EQ(*parseGoDuration("3\xc2\xb5s"), 3us);
  EXPECT_EQ(*parseGoDuration("3\xce\xbcs"), 3us);
  EXPECT_EQ(*parseGoDuration("7ns"), 7ns);
  EXPECT_EQ(*parseGoDuration("1h1m1s1ms1us1ns"), 1h + 1min + 1s + 1ms + 1us + 1ns);
  EXPECT_EQ(*parseGoDuration("9223372036854775807ns"), Duration(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(*parseGoDuration("-9223372036854775808ns"), Duration(std::numeric_limits<int64_t>::min()));
  for (const char* bad : {"", "-", "10", "s", ".s", "1.5", "5x", "1h 2m", " 1s", "1s ", "9223372036854775808ns",
                          "3000000h", "1e3s", "0x10s"}) {
    EXPECT_FALSE(parseGoDuration(bad).ok()) << bad;
  }
  EXPECT_EQ(formatGoDuration(10min), "10m0s");
  EXPECT_EQ(formatGoDuration(15s), "15s");
  EXPECT_EQ(formatGoDuration(90min), "1h30m0s");
  EXPECT_EQ(formatGoDuration(500ms), "500ms");
  EXPECT_EQ(formatGoDuration(0s), "0s");
  EXPECT_EQ(formatGoDuration(1500ms), "1.5s");
  EXPECT_EQ(formatGoDuration(1500us), "1.5ms");
  EXPECT_EQ(formatGoDuration(3us), "3\xc2\xb5s");
  EXPECT_EQ(formatGoDuration(7ns), "7ns");
  EXPECT_EQ(formatGoDuration(-61s), "-1m1s");
  EXPECT_EQ(formatGoDuration(Duration(std::numeric_limits<int64_t>::min())), "-2562047h47m16.854775808s");
  EXPECT_EQ(formatGoDuration(Duration(std::numeric_limits<int64_t>::max())), "2562047h47m16.854775807s");
  for (int64_t n : {int64_t{1}, int64_t{999}, int64_t{1001}, int64_t{123456789}, int64_t{86400000000001},
                    std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    EXPECT_EQ(*parseGoDuration(formatGoDuration(Duration(n))), Duration(n)) << n;
  }
}

TEST(ConfigValues, IntsAndFloats) {
  EXPECT_EQ(*parseGoInt("443"), 443);
  EXPECT_EQ(*parseGoInt("-1"), -1);
  EXPECT_EQ(*parseGoInt("+7"), 7);
  EXPECT_EQ(*parseGoInt("0x1F"), 31);
  EXPECT_EQ(*parseGoInt("0o17"), 15);
  EXPECT_EQ(*parseGoInt("017"), 15);
  EXPECT_EQ(*parseGoInt("0b101"), 5);
  EXPECT_EQ(*parseGoInt("1_000"), 1000);
  EXPECT_EQ(*parseGoInt("0"), 0);
  EXPECT_EQ(*parseGoInt("9223372036854775807"), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(*parseGoInt("-9223372036854775808"), std::numeric_limits<int64_t>::min());
  for (const char* bad : {"", "+", "-", "08", "0x", "1_", "_1", "1__0", "12a", " 1", "1.0"}) {
    EXPECT_FALSE(parseGoInt(bad).ok()) << bad;
  }
  EXPECT_EQ(parseGoInt("99999999999999999999").error(), "value out of range");

  for (const char* inf : {"+Inf", "inf", "Inf", "INF", "infinity", "+Infinity"}) {
    auto f = parseGoFloat(inf);
    ASSERT_TRUE(f.ok()) << inf;
    EXPECT_TRUE(std::isinf(*f) && *f > 0) << inf;
  }
  EXPECT_TRUE(std::isinf(*parseGoFloat("-inf")) && *parseGoFloat("-inf") < 0);
  EXPECT_TRUE(std::isnan(*parseGoFloat("NaN")));
  EXPECT_EQ(*parseGoFloat("100"), 100.0);
  EXPECT_EQ(*parseGoFloat("2.5"), 2.5);
  EXPECT_EQ(*parseGoFloat(".5"), 0.5);
  EXPECT_EQ(*parseGoFloat("1e3"), 1000.0);
  EXPECT_EQ(*parseGoFloat("-1E-1"), -0.1);
  EXPECT_EQ(*parseGoFloat("1_000.5"), 1000.5);
  EXPECT_EQ(*parseGoFloat("0x1p4"), 16.0);
  for (const char* bad : {"", "+", "abc", "1e", "0x10", "1e400", "--1", "+-1", "1 ", "in"}) {
    EXPECT_FALSE(parseGoFloat(bad).ok()) << bad;
  }
}

TEST_F(ConfigFlags, AllTypedFlags) {
  auto c = load({"-accept-connection-limit=+Inf", "-accept-connection-burst=0x10", "-tcp-keepalive-time=1h30m",
                 "-tcp-user-timeout=500ms", "-threads=4", "-drain-timeout=2.5s", "-log-level=debug",
                 "-user=u", "-cert-user=cu", "-runtime-dir=/r", "-state-dir=/s", "-log-file=/l",
                 "-bootstrap-dns-names=a,b", "-unpublished-bootstrap-dns-names=c/d"});
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_TRUE(std::isinf(c->acceptConnectionLimit));
  EXPECT_EQ(c->acceptConnectionBurst, 16);
  EXPECT_EQ(c->tcpKeepaliveTime, 90min);
  EXPECT_EQ(c->tcpUserTimeout, 500ms);
  EXPECT_EQ(c->threads, 4);
  EXPECT_EQ(c->drainTimeout, 2500ms);
  EXPECT_EQ(c->logLevel, "debug");
  EXPECT_EQ(c->user, "u");
  EXPECT_EQ(c->certUser, "cu");
  EXPECT_EQ(c->runtimeDir, "/r");
  EXPECT_EQ(c->stateDir, "/s");
  EXPECT_EQ(c->logFile, "/l");
  EXPECT_EQ(c->bootstrapDnsNames, "a,b");
  EXPECT_EQ(c->unpublishedBootstrapDnsNames, "c/d");
  c = load({"-accept-connection-limit", "inf"});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(std::isinf(c->acceptConnectionLimit));
  c = load({"-accept-connection-limit", "12.5"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->acceptConnectionLimit, 12.5);
  EXPECT_EQ(renderValue(*c, "accept-connection-limit"), "12.5");
  EXPECT_EQ(renderValue(defaultConfig(testEnv()), "accept-connection-limit"), "+Inf");
  EXPECT_EQ(renderValue(defaultConfig(testEnv()), "accept-connection-burst"), "9223372036854775807");
  EXPECT_EQ(renderValue(defaultConfig(testEnv()), "tcp-keepalive-time"), "10m0s");
}

// --- config file ---

TEST(ConfigFile, CommentsQuotesWhitespace) {
  const std::string text =
      "# full-line comment\n"
      "   # indented comment\n"
      "\n"
      "  \t \n"
      "a=:8443\n"
      "  hostname   =   derp.example.com   # trailing comment\n"
      "certdir = /a#b\n"                       // '#' not after whitespace: part of the value
      "c = \"/path with spaces/key # not a comment\"  # comment\n"
      "log-file = \"q\\\"b\\\\s\"\n"
      "mesh-psk-file = \"\"\n"
      "user =\r\n"                              // CRLF, empty value
      "cert-user = \"  padded  \"\n"
      "stun = false\n"
      "tcp-user-timeout = 1m30s\n"
      "accept-connection-limit = +Inf";          // no final newline
  auto c = parseConfigText(text, "derpd.conf", testEnv());
  ASSERT_FALSE(c.ok());  // user must not be empty
  EXPECT_EQ(c.error(), "derpd.conf:11: user must not be empty");  // named where it was set

  Config cfg = defaultConfig(testEnv());
  ASSERT_TRUE(applyConfigText(cfg, text, "derpd.conf").ok());
  EXPECT_EQ(cfg.addr, ":8443");
  EXPECT_EQ(cfg.hostname, "derp.example.com");
  EXPECT_EQ(cfg.certDir, "/a#b");
  EXPECT_EQ(cfg.keyFile, "/path with spaces/key # not a comment");
  EXPECT_EQ(cfg.logFile, "q\"b\\s");
  EXPECT_EQ(cfg.meshPskFile, "");
  EXPECT_EQ(cfg.user, "");
  EXPECT_EQ(cfg.certUser, "  padded  ");
  EXPECT_FALSE(cfg.stun);
  EXPECT_EQ(cfg.tcpUserTimeout, 90s);
  EXPECT_TRUE(std::isinf(cfg.acceptConnectionLimit));
  EXPECT_EQ(cfg.originOf("hostname").describe("hostname"), "derpd.conf:6");
  EXPECT_EQ(cfg.originOf("accept-connection-limit").describe("x"), "derpd.conf:15");
  EXPECT_EQ(cfg.originOf("dev").describe("dev"), "default");
}

TEST(ConfigFile, ErrorsNameFileAndLine) {
  struct Case {
    std::string text;
    std::string err;
  };
  const std::vector<Case> cases = {
      {"# c\n\nfoo = 1\n", "derpd.conf:3: unknown key \"foo\""},
      {"-a = :1\n", "derpd.conf:1: unknown key \"-a\""},
      {"help = true\n", "derpd.conf:1: unknown key \"help\""},
      {"a = :1\n\na = :2\n", "derpd.conf:3: duplicate key \"a\" (first set on line 1)"},
      {"dev = true\njust words\n", "derpd.conf:2: expected \"key = value\""},
      {" = x\n", "derpd.conf:1: missing key before '='"},
      {"http-port = 8o\n", "derpd.conf:1: invalid value \"8o\" for key \"http-port\": parse error"},
      {"dev\n", "derpd.conf:1: expected \"key = value\""},
      {"dev =\n",
       "derpd.conf:1: invalid value \"\" for key \"dev\": parse error (want true or false; also 1, 0, t, f, T, F, "
       "TRUE, FALSE, True, False)"},
      {"tcp-keepalive-time = 10\n", "derpd.conf:1: invalid value \"10\" for key \"tcp-keepalive-time\": time: missing unit in duration \"10\""},
      {"hostname = \"abc\n", "derpd.conf:1: unterminated quoted value for key \"hostname\""},
      {"hostname = \"abc\\\n", "derpd.conf:1: unterminated quoted value for key \"hostname\""},
      {"hostname = \"a\\nb\"\n", "derpd.conf:1: bad escape \\n in quoted value (only \\\" and \\\\) for key \"hostname\""},
      {"hostname = \"a\" b\n", "derpd.conf:1: unexpected text after the closing quote for key \"hostname\""},
  };
  for (const Case& c : cases) {
    auto r = parseConfigText(c.text, "derpd.conf", testEnv());
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error(), c.err);
  }
  // Validation errors after a clean parse name the line the value came from
  // (not a flag the user never passed).
  auto r = parseConfigText("# x\ncertmode = gcp\n", "derpd.conf", testEnv());
  EXPECT_EQ(r.error(), "derpd.conf:2: certmode \"gcp\" unsupported (manual or letsencrypt)");
  r = parseConfigText("log-level = verbose\n", "derpd.conf", testEnv());
  EXPECT_EQ(r.error(), "derpd.conf:1: log-level \"verbose\": want trace, debug, info, warn or error");
}

TEST_F(ConfigFlags, PrecedenceFlagOverFileOverDefault) {
  const std::string path = write("derpd.conf",
                                 "hostname = file.example\n"
                                 "http-port = 8080\n"
                                 "stun = false\n");
  auto c = loadConfig({"--config", path, "-hostname=flag.example"}, testEnv());
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(c->hostname, "flag.example");
  EXPECT_EQ(c->httpPort, 8080);
  EXPECT_FALSE(c->stun);
  EXPECT_EQ(c->stunPort, 3478);
  EXPECT_EQ(c->configFile, path);
  EXPECT_EQ(c->originOf("hostname").describe("hostname"), "flag -hostname");
  EXPECT_EQ(c->originOf("http-port").describe("http-port"), path + ":2");
  EXPECT_EQ(c->originOf("stun-port").describe("stun-port"), "default");
  EXPECT_EQ(c->originOf("config").describe("config"), "flag -config");

  // -config and --config=FILE spellings.
  c = loadConfig({"-config=" + path}, testEnv());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->hostname, "file.example");

  // A flag value can satisfy a cross-key rule the file alone breaks, and the
  // rule is checked on the merged result.
  const std::string mesh = write("mesh.conf", "mesh-with = peer.example\n");
  EXPECT_EQ(loadConfig({"--config", mesh}, testEnv()).error(), mesh + ":1: mesh-with requires -mesh-psk-file");
  // The same value from a flag is named by the flag.
  EXPECT_EQ(loadConfig({"--config", "/dev/null", "-mesh-with", "peer.example"}, testEnv()).error(),
            "-mesh-with requires -mesh-psk-file");
  EXPECT_TRUE(loadConfig({"--config", mesh, "-mesh-psk-file=/k"}, testEnv()).ok());
}

TEST_F(ConfigFlags, MissingAndBrokenFiles) {
  const std::string missing = (dir_ / "absent.conf").string();
  auto r = loadConfig({"--config", missing}, testEnv());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error(), "config file " + missing + ": No such file or directory");
  const std::string bad = write("bad.conf", "a = :1\nbogus = 2\n");
  r = loadConfig({"--config", bad}, testEnv());
  EXPECT_EQ(r.error(), bad + ":2: unknown key \"bogus\"");
  // -version skips the file, so it works with a broken one.
  r = loadConfig({"--config", bad, "-version"}, testEnv());
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_TRUE(r->version);
  // A directory is not a readable file.
  r = loadConfig({"--config", dir_.string()}, testEnv());
  EXPECT_FALSE(r.ok());
}

TEST(ConfigRender, DefaultsRoundTrip) {
  const Config def = defaultConfig(testEnv());
  const std::string text = renderConfig(def);
  EXPECT_NE(text.find("accept-connection-limit = +Inf\n"), std::string::npos);
  EXPECT_NE(text.find("c = \"\"\n"), std::string::npos);
  EXPECT_NE(text.find("tcp-keepalive-time = 10m0s\n"), std::string::npos);
  auto again = parseConfigText(text, "rendered", testEnv());
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_TRUE(static_cast<const Settings&>(*again) == def);
  EXPECT_EQ(renderConfig(*again), text);
}

TEST(ConfigRender, Usage) {
  const std::string u = usage(testEnv());
  for (const std::string& k : keyNames()) {
    EXPECT_NE(u.find("\n  -" + k + " ") == std::string::npos ? u.find("\n  -" + k + "\n") : 0,
              std::string::npos)
        << k;
  }
  EXPECT_NE(u.find("(default \":443\")"), std::string::npos);
  EXPECT_NE(u.find("(default +Inf)"), std::string::npos);
  EXPECT_NE(u.find("(default 10m0s)"), std::string::npos);
  EXPECT_NE(u.find("(default \"/home/test/.cache/tailscale/derper-certs\")"), std::string::npos);
  EXPECT_NE(u.find("-help"), std::string::npos);
  // Every key is implemented: nothing is marked as not supported.
  EXPECT_EQ(u.find("not yet supported"), std::string::npos);
  for (const char* k : {"stun", "stun-port", "bootstrap-dns-server", "bootstrap-dns-names",
                        "unpublished-bootstrap-dns-names", "certmode", "acme-directory-url", "mesh-with",
                        "verify-clients", "verify-client-url", "verify-client-url-fail-open"}) {
    auto at = u.find("\n  -" + std::string(k) + " ");
    if (at == std::string::npos) at = u.find("\n  -" + std::string(k) + "\n");
    ASSERT_NE(at, std::string::npos) << k;
    const auto end = u.find("\n  -", at + 1);
    EXPECT_EQ(u.substr(at, end - at).find("(not yet supported)"), std::string::npos) << k;
  }
  EXPECT_EQ(u.find("letsencrypt (not yet supported)"), std::string::npos);
}

// --- golden: tests/golden/config/<name>.conf -> render -> <name>.ok ---

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ConfigGolden, RenderMatchesAndRoundTrips) {
  const std::filesystem::path dir = DERPD_VECTORS_DIR "/../golden/config";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".conf") continue;
    ++count;
    const std::string name = entry.path().filename().string();
    auto okPath = entry.path();
    okPath.replace_extension(".ok");
    ASSERT_TRUE(std::filesystem::exists(okPath)) << name;
    auto c = parseConfigText(readFile(entry.path().string()), name, testEnv());
    ASSERT_TRUE(c.ok()) << name << ": " << c.error();
    const std::string rendered = renderConfig(*c);
    EXPECT_EQ(rendered, readFile(okPath.string())) << name;
    auto again = parseConfigText(rendered, name + " (rendered)", testEnv());
    ASSERT_TRUE(again.ok()) << name << ": " << again.error();
    EXPECT_TRUE(static_cast<const Settings&>(*again) == static_cast<const Settings&>(*c)) << name;
    EXPECT_EQ(renderConfig(*again), rendered) << name;
  }
  EXPECT_GE(count, 3);
}

}  // namespace
}  // namespace derpd::config

namespace derpd::config {
namespace {

TEST(ConfigValidate, AcmeChallengeList) {
  auto c = parseAcmeChallenges(" http-01 ,tls-alpn-01");
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(*c, (std::vector<std::string>{"http-01", "tls-alpn-01"}));
  for (const char* bad : {"", "dns-01", "http-01,", "http-01,,tls-alpn-01"}) {
    EXPECT_FALSE(parseAcmeChallenges(bad).ok()) << bad;
    auto cfg = parseConfigText(std::string("acme-challenges = \"") + bad + "\"\n", "derpd.conf");
    ASSERT_FALSE(cfg.ok()) << bad;
    EXPECT_NE(cfg.error().find("derpd.conf:1: acme-challenges"), std::string::npos) << cfg.error();
  }
}

}  // namespace
}  // namespace derpd::config
