// The pure parts of common/net/dns_client: server addresses, resolv.conf and
// /etc/hosts parsing. (The network parts are tested against dnsmasq in
// tests/integration/bootstrap_dns_test.cpp.)
#include "common/net/dns_client.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace derpd::net {
namespace {

// A temp file holding `text`, removed at scope end.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char tmpl[] = "/tmp/dns_client_test.XXXXXX";
    const int fd = ::mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    path_ = tmpl;
    EXPECT_EQ(::write(fd, text.data(), text.size()), ssize_t(text.size()));
    ::close(fd);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(DnsServerParse, Forms) {
  struct Case {
    const char* in;
    const char* out;
  };
  for (const Case& c : {Case{"1.2.3.4", "1.2.3.4:53"}, Case{"1.2.3.4:5353", "1.2.3.4:5353"},
                        Case{"::1", "[::1]:53"}, Case{"[::1]:5300", "[::1]:5300"},
                        Case{"2001:db8::53", "[2001:db8::53]:53"}, Case{"[2001:db8::53]", "[2001:db8::53]:53"}}) {
    auto s = parseDnsServer(c.in);
    ASSERT_TRUE(s.ok()) << c.in << ": " << s.error();
    EXPECT_EQ(s->toString(), c.out) << c.in;
  }
  for (const char* bad : {"", "host.example", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "[::1", "[::1]x",
                          "[::1]:x", "1.2.3.4:53x", "[fe80::1%no-such-if0]:53"})
    EXPECT_FALSE(parseDnsServer(bad).ok()) << bad;
}

TEST(SystemNameserver, FirstIpLine) {
  TempFile f(
      "# generated\n"
      "; comment\n"
      "search example.com\n"
      "nameserver not-an-ip\n"
      "nameserver\n"
      "nameserver\t127.0.0.53 \n"
      "nameserver 8.8.8.8\n"
      "options edns0\n");
  auto ns = systemNameserver(f.path());
  ASSERT_TRUE(ns.ok()) << ns.error();
  EXPECT_EQ(*ns, "127.0.0.53");
  TempFile v6("nameserver fe80::1%lo\n");
  ns = systemNameserver(v6.path());
  ASSERT_TRUE(ns.ok());
  EXPECT_EQ(*ns, "fe80::1%lo");
  EXPECT_TRUE(parseDnsServer(*ns).ok());  // lo exists everywhere
  // As Go: nothing usable, or no file at all -> 127.0.0.1.
  TempFile none("search example.com\n");
  EXPECT_EQ(systemNameserver(none.path()).value(), "127.0.0.1");
  EXPECT_EQ(systemNameserver("/nonexistent/resolv.conf").value(), "127.0.0.1");
  // A directory is a read error.
  EXPECT_FALSE(systemNameserver("/").ok());
}

TEST(HostsFile, ParseAndLookup) {
  const HostsFile h = HostsFile::parse(
      "127.0.0.1\tlocalhost\n"
      "::1 localhost ip6-localhost ip6-loopback # comment\n"
      "# 10.0.0.1 commented.example\n"
      "192.0.2.7 Derp.Example.COM derp\n"
      "not-an-ip bogus.example\n"
      "192.0.2.8\n"
      "fe80::1%eth0 linklocal.example\n"
      "::ffff:192.0.2.9 mapped.example\n");
  EXPECT_EQ(h.lookup("localhost"), (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(h.lookup("LOCALHOST."), (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(h.lookup("derp.example.com"), std::vector<std::string>{"192.0.2.7"});
  EXPECT_EQ(h.lookup("derp"), std::vector<std::string>{"192.0.2.7"});
  EXPECT_EQ(h.lookup("linklocal.example"), std::vector<std::string>{"fe80::1"});
  EXPECT_EQ(h.lookup("mapped.example"), std::vector<std::string>{"192.0.2.9"});
  EXPECT_TRUE(h.lookup("commented.example").empty());
  EXPECT_TRUE(h.lookup("bogus.example").empty());
  EXPECT_TRUE(h.lookup("absent.example").empty());

  TempFile f("10.1.2.3 filed.example\n");
  auto loaded = HostsFile::load(f.path());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->lookup("filed.example"), std::vector<std::string>{"10.1.2.3"});
  auto missing = HostsFile::load("/nonexistent/hosts");
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->lookup("localhost").empty());
}

TEST(DnsClientLookups, InvalidNamesAndLiteralsNeedNoNetwork) {
  DnsServer none;  // no server at all: these must not send anything
  auto lit = resolveAddrs(none, "2001:DB8::1", std::chrono::milliseconds(10));
  ASSERT_TRUE(lit.ok());
  EXPECT_EQ(*lit, std::vector<std::string>{"2001:db8::1"});
  EXPECT_FALSE(resolveAddrs(none, "bad name", std::chrono::milliseconds(10)).ok());
  EXPECT_FALSE(resolveTxt(none, "", std::chrono::milliseconds(10)).ok());
  EXPECT_FALSE(dnsQuery(none, "ok.example", dns::RrType::A, std::chrono::milliseconds(10)).ok());
}

}  // namespace
}  // namespace derpd::net
