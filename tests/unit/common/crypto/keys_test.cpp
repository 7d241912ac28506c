#include "common/crypto/keys.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "support/vectors.hpp"

namespace derpd::crypto {
namespace {

using test::hexBytes;
using test::loadVectorJson;
using test::readVectorFile;

std::array<uint8_t, kKeyLen> arr(const std::string& hex) {
  Bytes b = hexBytes(hex);
  EXPECT_EQ(b.size(), kKeyLen);
  std::array<uint8_t, kKeyLen> a{};
  std::copy_n(b.begin(), std::min(b.size(), a.size()), a.begin());
  return a;
}

NodePrivate privFromHex(const std::string& hex) { return NodePrivate::fromRaw(hexBytes(hex)); }

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "derpd-keys-XXXXXX").string();
    char* d = ::mkdtemp(tmpl.data());
    EXPECT_NE(d, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(Keys, PrivateKeyCases) {
  auto j = loadVectorJson("keys.json");
  ASSERT_GE(j["private_key_cases"].size(), 20u);
  for (const auto& c : j["private_key_cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string rawHex = c["raw_private_hex"];
    NodePrivate raw = privFromHex(rawHex);
    // Go's NodePrivateFromRaw32 does not clamp.
    EXPECT_EQ(raw.toText(), c["go_NodePrivateFromRaw32_text"].get<std::string>());
    EXPECT_EQ(raw.publicKey().toHex(), c["go_public_from_raw_hex"].get<std::string>());

    auto a = arr(rawHex);
    clamp(a);
    EXPECT_EQ(toHex(ByteView(a.data(), a.size())), c["clamped_private_hex"].get<std::string>());
    EXPECT_EQ(a == arr(rawHex), c["raw_is_clamped"].get<bool>());

    NodePrivate clamped = NodePrivate::fromRaw(ByteView(a.data(), a.size()));
    EXPECT_EQ(clamped.toText(), c["clamped_private_text"].get<std::string>());
    NodePublic pub = clamped.publicKey();
    EXPECT_EQ(pub.toHex(), c["go_public_from_clamped_hex"].get<std::string>());
    EXPECT_EQ(pub.toText(), c["public_text"].get<std::string>());
    EXPECT_EQ(pub.toText(), c["public_String"].get<std::string>());
    EXPECT_EQ(pub.shortString(), c["public_ShortString"].get<std::string>());
    EXPECT_EQ("6e70" + pub.toHex(), c["public_MarshalBinary_hex"].get<std::string>());
    EXPECT_EQ(std::string("derpkey") + pub.toHex(), c["meta_cert_CN"].get<std::string>());
    EXPECT_FALSE(pub.isZero());

    const std::string cfg = c["derper_config_json_for_clamped"];
    EXPECT_EQ(keyFileContents(clamped), cfg);
    auto parsed = parseKeyFile(cfg);
    ASSERT_TRUE(parsed.ok()) << parsed.error();
    EXPECT_EQ(*parsed, clamped);

    // Text round trips.
    auto pt = NodePublic::parseText(pub.toText());
    ASSERT_TRUE(pt.ok());
    EXPECT_EQ(*pt, pub);
    auto ph = NodePublic::parseUntypedHex(pub.toHex());
    ASSERT_TRUE(ph.ok());
    EXPECT_EQ(*ph, pub);
    auto kt = NodePrivate::parseText(raw.toText());
    ASSERT_TRUE(kt.ok());
    EXPECT_EQ(*kt, raw);
  }
}

TEST(Keys, Rfc7748Alice) {
  NodePrivate k = privFromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  EXPECT_EQ(k.publicKey().toHex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
}

TEST(Keys, TextParsing) {
  auto j = loadVectorJson("keys.json");
  int n = 0;
  for (const auto& t : j["text_parsing"]) {
    const std::string fn = t["func"];
    const std::string input = t["input"];
    const bool ok = t["ok"];
    SCOPED_TRACE(fn + " " + input);
    ++n;
    if (fn == "NodePublic.UnmarshalText") {
      auto r = NodePublic::parseText(input);
      ASSERT_EQ(r.ok(), ok) << (r.ok() ? "" : r.error());
      if (ok) {
        EXPECT_EQ(r->toHex(), t["result"].get<std::string>());
      }
    } else if (fn == "ParseNodePublicUntyped") {
      auto r = NodePublic::parseUntypedHex(input);
      ASSERT_EQ(r.ok(), ok);
      if (ok) {
        EXPECT_EQ(r->toHex(), t["result"].get<std::string>());
      }
    } else if (fn == "NodePrivate.UnmarshalText") {
      auto r = NodePrivate::parseText(input);
      ASSERT_EQ(r.ok(), ok);
      if (ok) {
        // "privkey:<hex> (public <hex>)"
        const std::string want = t["result"];
        EXPECT_EQ(r->toText() + " (public " + r->publicKey().toHex() + ")", want);
      }
    } else {
      ADD_FAILURE() << "unknown func " << fn;
    }
    if (!ok) {
      EXPECT_TRUE(t.contains("go_error"));
    }
  }
  EXPECT_GE(n, 16);
}

TEST(Keys, TextParsingExtra) {
  const std::string hex = "f2961cac0e15ce20d9848bc4f7a81a72efa61333b9f1c767b165f345bdb2f404";
  EXPECT_FALSE(NodePublic::parseText("").ok());
  EXPECT_FALSE(NodePublic::parseText("nodekey:").ok());
  EXPECT_FALSE(NodePublic::parseText("Nodekey:" + hex).ok());
  EXPECT_FALSE(NodePublic::parseText("nodekey:" + hex + " ").ok());
  EXPECT_FALSE(NodePublic::parseUntypedHex(hex.substr(0, 62) + "0g").ok());
  EXPECT_FALSE(NodePublic::parseUntypedHex("").ok());
  EXPECT_FALSE(NodePrivate::parseText("PRIVKEY:" + hex).ok());
  EXPECT_FALSE(NodePrivate::parseText("privkey:" + hex.substr(2)).ok());
  // Mixed case hex is fine.
  auto r = NodePublic::parseText("nodekey:F2961cac0E15CE20d9848bc4f7a81a72efa61333b9f1c767b165f345bdb2f404");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->toHex(), hex);
}

TEST(Keys, NewNodeWithChosenRandom) {
  auto j = loadVectorJson("keys.json");
  ASSERT_FALSE(j["new_node_with_chosen_random"].empty());
  for (const auto& c : j["new_node_with_chosen_random"]) {
    auto a = arr(c["random_bytes_hex"]);
    clamp(a);
    EXPECT_EQ(toHex(ByteView(a.data(), a.size())), c["expected_clamped_hex"].get<std::string>());
    EXPECT_EQ(toHex(ByteView(a.data(), a.size())), c["go_NewNode_private_hex"].get<std::string>());
    NodePrivate k = NodePrivate::fromRaw(ByteView(a.data(), a.size()));
    EXPECT_EQ(k.toText(), c["go_NewNode_private_text"].get<std::string>());
    EXPECT_EQ(k.publicKey().toHex(), c["public_hex"].get<std::string>());
    EXPECT_EQ(k.publicKey().toText(), c["public_text"].get<std::string>());
  }
}

TEST(Keys, GenerateIsClampedAndRandom) {
  NodePrivate a = NodePrivate::generate();
  NodePrivate b = NodePrivate::generate();
  EXPECT_FALSE(a.isZero());
  EXPECT_NE(a, b);
  EXPECT_NE(a.publicKey(), b.publicKey());
  for (const NodePrivate* k : {&a, &b}) {
    EXPECT_EQ(k->data()[0] & 7, 0);
    EXPECT_EQ(k->data()[31] & 0xc0, 0x40);
  }
}

TEST(Keys, ZeroKeys) {
  NodePrivate zp;
  NodePublic z;
  EXPECT_TRUE(zp.isZero());
  EXPECT_TRUE(z.isZero());
  EXPECT_EQ(z.toHex(), std::string(64, '0'));
  EXPECT_EQ(NodePublic::fromRaw(Bytes(31, 1)), z);  // wrong size: stays zero
}

TEST(Keys, HashAndOrdering) {
  auto j = loadVectorJson("keys.json");
  std::unordered_set<NodePublic, NodePublicHash> set;
  for (const auto& c : j["private_key_cases"]) {
    set.insert(NodePublic::fromRaw(hexBytes(c["go_public_from_raw_hex"])));
  }
  EXPECT_EQ(set.size(), j["private_key_cases"].size());
  NodePublic a = NodePublic::fromRaw(Bytes(32, 1)), b = NodePublic::fromRaw(Bytes(32, 2));
  EXPECT_LT(a, b);
}

TEST(Keys, GeneratedDerperConfig) {
  auto j = loadVectorJson("keys.json");
  const auto& meta = j["derper_generated_config"];
  const std::string file = readVectorFile("derper-config-generated.json");
  EXPECT_EQ(file.size(), meta["file_len"].get<size_t>());
  auto k = parseKeyFile(file);
  ASSERT_TRUE(k.ok()) << k.error();
  EXPECT_EQ(k->toText(), meta["private_text"].get<std::string>());
  EXPECT_EQ(k->publicKey().toHex(), meta["public_hex_computed_by_go_types_key"].get<std::string>());
  EXPECT_EQ(k->publicKey().toHex(),
            meta["public_hex_announced_by_derper_in_101_Derp-Public-Key"].get<std::string>());
  // We write the same bytes derper wrote.
  EXPECT_EQ(keyFileContents(*k), file);
}

TEST(Keys, JsonForms) {
  auto j = loadVectorJson("keys.json");
  NodePrivate server = privFromHex("78719ff9130931263ff58f3e315ca71a4726b7fac797b4e1efbbdd9400d42a62");
  int seen = 0;
  for (const auto& f : j["json_forms"]) {
    const std::string what = f["what"];
    const std::string text = f["json"];
    if (text.find("PrivateKey") == std::string::npos) continue;
    ++seen;
    auto k = parseKeyFile(text);
    ASSERT_TRUE(k.ok()) << k.error();
    EXPECT_EQ(*k, server);
    if (what.find("MarshalIndent") != std::string::npos) {
      EXPECT_EQ(keyFileContents(server), text);
    }
  }
  EXPECT_EQ(seen, 2);
}

TEST(Keys, ParseKeyFileGoSemantics) {
  const std::string t = "privkey:78719ff9130931263ff58f3e315ca71a4726b7fac797b4e1efbbdd9400d42a62";
  const std::string t2 = "privkey:103a1ca3ab6bc732bc7b93b814b4a2a59d6959407d01c971aeae3777cb39544b";
  auto want = NodePrivate::parseText(t);
  ASSERT_TRUE(want.ok());
  auto ok = [&](const std::string& json) {
    auto r = parseKeyFile(json);
    EXPECT_TRUE(r.ok()) << json << ": " << (r.ok() ? "" : r.error());
    return r.ok() ? r->toText() : std::string();
  };
  EXPECT_EQ(ok(R"({"PrivateKey":")" + t + R"("})"), t);
  EXPECT_EQ(ok(R"({"privatekey":")" + t + R"("})"), t);
  EXPECT_EQ(ok(R"({"PRIVATEKEY":")" + t + R"("})"), t);
  // KELVIN SIGN folds to k in Go's EqualFold.
  EXPECT_EQ(ok("{\"Private\xE2\x84\xAA" "ey\":\"" + t + "\"}"), t);
  EXPECT_EQ(ok(R"({"Other":[1,{"x":null}],"PrivateKey":")" + t + R"(","z":true})"), t);
  // The last occurrence wins, whatever its case.
  EXPECT_EQ(ok(R"({"PrivateKey":")" + t + R"(","privateKEY":")" + t2 + R"("})"), t2);
  EXPECT_EQ(ok(R"({"privateKEY":")" + t2 + R"(","PrivateKey":")" + t + R"("})"), t);
  // null leaves the earlier value.
  EXPECT_EQ(ok(R"({"PrivateKey":")" + t + R"(","PrivateKey":null})"), t);

  for (const std::string& bad : {
           std::string(""),
           std::string("{}"),
           std::string("null"),
           std::string("[]"),
           std::string(R"({"PrivateKey":null})"),
           std::string(R"({"PrivateKey":12})"),
           std::string(R"({"PrivateKey":"nodekey:78719ff9130931263ff58f3e315ca71a4726b7fac797b4e1efbbdd9400d42a62"})"),
           std::string(R"({"PrivateKey":"privkey:0000000000000000000000000000000000000000000000000000000000000000"})"),
           std::string(R"({"PrivateKey":"privkey:78"})"),
           std::string(R"({"Private_Key":")" + t + R"("})"),
           std::string(R"({"PrivateKey":")" + t + R"("} x)"),
           // Go decodes every occurrence: an invalid earlier value is an error.
           std::string(R"({"PrivateKey":"privkey:zz","PrivateKey":")" + t + R"("})"),
           std::string(R"({"PrivateKey":{"k":")" + t + R"("}})"),
           std::string(R"({"PrivateKey":[")" + t + R"("]})"),
           std::string(R"({"PrivateKey":true})"),
           // nlohmann alone would skip a BOM / stop at NUL; Go rejects both.
           "\xEF\xBB\xBF" + std::string(R"({"PrivateKey":")") + t + "\"}",
           std::string(R"({"PrivateKey":")") + t + "\"}" + std::string(1, '\0') + "x",
       }) {
    EXPECT_FALSE(parseKeyFile(bad).ok()) << bad;
  }
}

TEST(Keys, LoadOrCreateKeyFile) {
  TempDir dir;
  const auto path = dir.path() / "sub" / "deeper" / "derper.key";
  bool created = false;
  auto k1 = loadOrCreateKeyFile(path.string(), &created);
  ASSERT_TRUE(k1.ok()) << k1.error();
  EXPECT_TRUE(created);
  EXPECT_FALSE(k1->isZero());
  EXPECT_EQ(k1->data()[0] & 7, 0);

  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string contents = slurp(path);
  EXPECT_EQ(contents.size(), 93u);
  EXPECT_EQ(contents, keyFileContents(*k1));
  EXPECT_EQ(contents.substr(0, 26), "{\n\t\"PrivateKey\": \"privkey:");
  EXPECT_EQ(contents.back(), '}');
  // No temp files left behind.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(path.parent_path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);

  auto k2 = loadOrCreateKeyFile(path.string(), &created);
  ASSERT_TRUE(k2.ok()) << k2.error();
  EXPECT_FALSE(created);
  EXPECT_EQ(*k1, *k2);

  // An existing derper file is read as is.
  const auto path2 = dir.path() / "derper.key";
  {
    std::ofstream f(path2, std::ios::binary);
    f << readVectorFile("derper-config-generated.json");
  }
  auto k3 = loadOrCreateKeyFile(path2.string());
  ASSERT_TRUE(k3.ok()) << k3.error();
  EXPECT_EQ(k3->publicKey().toHex(),
            "22e0a2101ffe4c47d1c46cbb2ffbd467fbde3fd4e21b3c56f7fea7ee377b0f69");

  // A corrupt file is an error, never silently replaced.
  {
    std::ofstream f(path2, std::ios::binary | std::ios::trunc);
    f << "{\"PrivateKey\": \"privkey:zz\"}";
  }
  EXPECT_FALSE(loadOrCreateKeyFile(path2.string(), &created).ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(slurp(path2), "{\"PrivateKey\": \"privkey:zz\"}");

  // A path that is a directory cannot be read.
  EXPECT_FALSE(loadOrCreateKeyFile(dir.path().string()).ok());
}

}  // namespace
}  // namespace derpd::crypto
