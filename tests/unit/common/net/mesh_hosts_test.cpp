// -mesh-with parsing (derper's "https://" + entry + "/derp", HEAD's
// "host/dialhost") and resolution of literal addresses.
#include "common/net/mesh_hosts.hpp"

#include <gtest/gtest.h>

namespace derpd::net {
namespace {

TEST(MeshWith, Entries) {
  auto r = parseMeshWith(" derp1.example.net, derp2.example.net:8443 ,10.0.0.3,[2001:db8::4]:444,[::1]");
  ASSERT_TRUE(r.ok()) << r.error();
  ASSERT_EQ(r->size(), 5u);
  EXPECT_EQ((*r)[0].host, "derp1.example.net");
  EXPECT_EQ((*r)[0].port, 443);
  EXPECT_EQ((*r)[0].authority, "derp1.example.net");
  EXPECT_EQ((*r)[0].dialHost, "derp1.example.net");
  EXPECT_EQ((*r)[1].port, 8443);
  EXPECT_EQ((*r)[1].authority, "derp2.example.net:8443");
  EXPECT_EQ((*r)[2].host, "10.0.0.3");
  EXPECT_EQ((*r)[3].host, "2001:db8::4");
  EXPECT_EQ((*r)[3].port, 444);
  EXPECT_EQ((*r)[3].authority, "[2001:db8::4]:444");
  EXPECT_EQ((*r)[4].host, "::1");
  EXPECT_EQ((*r)[4].port, 443);
  EXPECT_TRUE(parseMeshWith("")->empty());
}

TEST(MeshWith, DialHostForm) {
  auto r = parseMeshWith("derp1b.example.net/10.0.0.2,derp1c.example.net:8443/[fd00::3]");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ((*r)[0].host, "derp1b.example.net");
  EXPECT_EQ((*r)[0].dialHost, "10.0.0.2");
  EXPECT_EQ((*r)[0].authority, "derp1b.example.net");
  EXPECT_EQ((*r)[1].dialHost, "fd00::3");
  EXPECT_EQ((*r)[1].port, 8443);
}

TEST(MeshWith, BadEntriesNameTheEntry) {
  for (const char* bad : {"a,,b", "host:0", "host:99999", "host:x", "::1", "[::1", "[nothost]:1", "a/b/c",
                          "/10.0.0.1", "ho st", "h:1:2", "a/b c"}) {
    auto r = parseMeshWith(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  auto r = parseMeshWith("good.example,bad host");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().find("\"bad host\""), std::string::npos) << r.error();
}

TEST(MeshWith, ResolvesLiteralsAndLocalhost) {
  auto hosts = parseMeshWith("127.0.0.1:4443,[::1]:4443,x.example/127.0.0.2");
  ASSERT_TRUE(hosts.ok());
  ipc::MeshPeer p = resolveMeshHost((*hosts)[0]);
  EXPECT_EQ(p.host, "127.0.0.1:4443");
  EXPECT_EQ(p.addrs, std::vector<std::string>{"127.0.0.1:4443"});
  EXPECT_TRUE(p.error.empty());
  p = resolveMeshHost((*hosts)[1]);
  EXPECT_EQ(p.addrs, std::vector<std::string>{"[::1]:4443"});
  p = resolveMeshHost((*hosts)[2]);
  EXPECT_EQ(p.addrs, std::vector<std::string>{"127.0.0.2:443"});
  EXPECT_EQ(p.host, "x.example/127.0.0.2");
}

}  // namespace
}  // namespace derpd::net
