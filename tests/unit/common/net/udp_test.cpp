#include "common/net/udp.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <unistd.h>

#include <string>

#include "common/net/listener.hpp"

namespace derpd::net {
namespace {

struct Fds {
  std::vector<int> fds;
  ~Fds() {
    for (int fd : fds) ::close(fd);
  }
};

int family(int fd) {
  int d = 0;
  socklen_t len = sizeof d;
  ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &d, &len);
  return d;
}

bool nonBlockingCloexec(int fd) {
  return (::fcntl(fd, F_GETFL) & O_NONBLOCK) && (::fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

bool haveIpv6() {
  auto r = listenUdp("::1", 0);
  if (!r.ok()) return false;
  for (int fd : *r) ::close(fd);
  return true;
}

TEST(ListenUdp, Ipv4Literal) {
  auto r = listenUdp("127.0.0.1", 0);
  ASSERT_TRUE(r.ok()) << r.error();
  Fds f{*r};
  ASSERT_EQ(f.fds.size(), 1u);
  EXPECT_EQ(family(f.fds[0]), AF_INET);
  EXPECT_TRUE(nonBlockingCloexec(f.fds[0]));
  int port = localPort(f.fds[0]);
  EXPECT_GT(port, 0);
  EXPECT_EQ(localAddress(f.fds[0]), "127.0.0.1:" + std::to_string(port));
}

TEST(ListenUdp, Ipv6LiteralAndMappedLiteral) {
  if (!haveIpv6()) GTEST_SKIP() << "no IPv6 loopback";
  auto r = listenUdp("::1", 0);
  ASSERT_TRUE(r.ok()) << r.error();
  Fds f{*r};
  ASSERT_EQ(f.fds.size(), 1u);
  EXPECT_EQ(family(f.fds[0]), AF_INET6);
  EXPECT_EQ(localAddress(f.fds[0]), "[::1]:" + std::to_string(localPort(f.fds[0])));
  // ::ffff:127.0.0.1 binds an IPv4 socket, as Go does.
  auto m = listenUdp("::ffff:127.0.0.1", 0);
  ASSERT_TRUE(m.ok()) << m.error();
  Fds g{*m};
  ASSERT_EQ(g.fds.size(), 1u);
  EXPECT_EQ(family(g.fds[0]), AF_INET);
}

TEST(ListenUdp, EmptyHostIsTwoSocketsOnOnePort) {
  auto r = listenUdp("", 0);
  ASSERT_TRUE(r.ok()) << r.error();
  Fds f{*r};
  ASSERT_GE(f.fds.size(), 1u);
  EXPECT_EQ(family(f.fds[0]), AF_INET);
  const int port = localPort(f.fds[0]);
  EXPECT_EQ(localAddress(f.fds[0]), "0.0.0.0:" + std::to_string(port));
  if (!haveIpv6()) return;
  ASSERT_EQ(f.fds.size(), 2u);
  EXPECT_EQ(family(f.fds[1]), AF_INET6);
  EXPECT_EQ(localPort(f.fds[1]), port);
  EXPECT_EQ(localAddress(f.fds[1]), "[::]:" + std::to_string(port));
  int v6only = 0;
  socklen_t len = sizeof v6only;
  ASSERT_EQ(::getsockopt(f.fds[1], IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
  EXPECT_EQ(v6only, 1);
}

TEST(ListenUdp, ErrorsNameTheAddress) {
  auto first = listenUdp("127.0.0.1", 0);
  ASSERT_TRUE(first.ok());
  Fds f{*first};
  const int port = localPort(f.fds[0]);
  auto again = listenUdp("127.0.0.1", port);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().find("127.0.0.1:" + std::to_string(port)), std::string::npos) << again.error();
  auto bad = listenUdp("192.0.2.1", 0);  // TEST-NET: not a local address
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("192.0.2.1"), std::string::npos) << bad.error();
  EXPECT_FALSE(listenUdp("no such host.invalid", 0).ok());
  EXPECT_FALSE(listenUdp("127.0.0.1", 65536).ok());
}

TEST(AdoptUdpSocket, ChecksTheKind) {
  int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
  int tcp = ::socket(AF_INET, SOCK_STREAM, 0);
  int unixDgram = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  ASSERT_GE(udp, 0);
  EXPECT_TRUE(adoptUdpSocket(udp).ok());
  EXPECT_TRUE(nonBlockingCloexec(udp));
  EXPECT_FALSE(adoptUdpSocket(tcp).ok());
  EXPECT_FALSE(adoptUdpSocket(unixDgram).ok());
  EXPECT_FALSE(adoptUdpSocket(-1).ok());
  ::close(udp);
  ::close(tcp);
  ::close(unixDgram);
}

}  // namespace
}  // namespace derpd::net
