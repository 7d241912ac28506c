// Unit tests for common/proto/http/http.{hpp,cpp}: the bounded head parsers,
// checked against the real derper's HTTP exchanges and the transcripts'
// upgrade heads (tests/vectors/http/, tests/vectors/transcripts/).
#include "common/proto/http/http.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "support/vectors.hpp"

namespace derpd::http {
namespace {

using derpd::test::loadVectorJson;
using derpd::test::readVectorFile;
using derpd::test::vectorPath;

const char* statusName(ParseStatus s) {
  switch (s) {
    case ParseStatus::Incomplete: return "Incomplete";
    case ParseStatus::Complete: return "Complete";
    case ParseStatus::Invalid: return "Invalid";
    case ParseStatus::TooLarge: return "TooLarge";
  }
  return "?";
}

std::vector<std::pair<std::string, std::string>> headerPairs(const std::vector<Header>& hs) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Header& h : hs) out.emplace_back(h.name, h.value);
  return out;
}

std::vector<std::pair<std::string, std::string>> jsonPairs(const nlohmann::json& j) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : j) out.emplace_back(p.at(0).get<std::string>(), p.at(1).get<std::string>());
  return out;
}

// Feeds `wire` one byte at a time (as a slow client would): every strict
// prefix shorter than the head must be Incomplete, and the first prefix that
// holds the whole head must parse Complete with the same result as a whole feed.
void expectByteByByte(std::string_view wire, size_t headLen) {
  for (size_t n = 0; n < headLen; ++n) {
    RequestParse p = parseRequestHead(wire.substr(0, n));
    ASSERT_EQ(p.status, ParseStatus::Incomplete) << "prefix " << n << ": " << statusName(p.status) << " "
                                                << p.error;
  }
  RequestParse p = parseRequestHead(wire.substr(0, headLen));
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_EQ(p.head.headLen, headLen);
}

// ---------------------------------------------------------------------------
// Vectors: tests/vectors/http/*.request and *.response

TEST(HttpVectors, EveryRequestFileParsesWholeAndByteByByte) {
  size_t count = 0;
  for (const auto& ent : std::filesystem::directory_iterator(vectorPath("http"))) {
    if (ent.path().extension() != ".request") continue;
    ++count;
    const std::string name = ent.path().filename().string();
    SCOPED_TRACE(name);
    const std::string wire = readVectorFile("http/" + name);
    RequestParse p = parseRequestHead(wire);
    ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;
    EXPECT_EQ(p.head.headLen, wire.size());
    EXPECT_EQ(p.head.versionMinor, 1);
    ASSERT_NE(p.head.get("host"), nullptr);
    EXPECT_EQ(*p.head.get("User-Agent"), "derp-vectors/1");
    expectByteByByte(wire, wire.size());
  }
  EXPECT_EQ(count, 33u);
}

TEST(HttpVectors, RequestsMatchIndex) {
  const nlohmann::json idx = loadVectorJson("http/index.json");
  size_t checkedLine = 0;
  for (const auto& ex : idx.at("exchanges")) {
    const std::string name = ex.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const std::string wire = readVectorFile("http/" + ex.at("request_file").get<std::string>());
    RequestParse p = parseRequestHead(wire);
    ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;

    // index.json does not record the request itself; its description starts
    // with "METHOD /target" where it names one. Check those.
    const std::string desc = ex.at("description").get<std::string>();
    for (const char* m : {"GET ", "HEAD ", "POST "}) {
      if (desc.rfind(m, 0) != 0) continue;
      const std::string rest = desc.substr(std::string(m).size());
      const std::string target = rest.substr(0, rest.find(' '));
      EXPECT_EQ(p.head.method + " ", m);
      EXPECT_EQ(p.head.target, target);
      ++checkedLine;
    }
    // The request line as sent is the first line of the file.
    const std::string first = wire.substr(0, wire.find("\r\n"));
    EXPECT_EQ(first, p.head.method + " " + p.head.target + " HTTP/1.1");
  }
  EXPECT_GE(checkedLine, 20u);
}

TEST(HttpVectors, SpecificRequests) {
  {
    RequestParse p = parseRequestHead(readVectorFile("http/bootstrap_dns_q.request"));
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.method, "GET");
    EXPECT_EQ(p.head.target, "/bootstrap-dns?q=localhost");
    EXPECT_EQ(p.head.path, "/bootstrap-dns");
    EXPECT_EQ(p.head.query, "q=localhost");
    EXPECT_EQ(queryValue(p.head.query, "q"), "localhost");
    EXPECT_EQ(*p.head.get("Host"), "127.0.0.1:3340");
  }
  {
    RequestParse p = parseRequestHead(readVectorFile("http/port80_get_path_query.request"));
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.path, "/some/path");
    EXPECT_EQ(p.head.query, "x=1");
  }
  {
    RequestParse p = parseRequestHead(readVectorFile("http/derp_probe_post.request"));
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.method, "POST");
    EXPECT_EQ(*p.head.get("content-length"), "0");
  }
  {
    RequestParse p = parseRequestHead(readVectorFile("http/generate_204_challenge_65.request"));
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.get("X-Tailscale-Challenge")->size(), 65u);
  }
  {
    RequestParse p =
        parseRequestHead(readVectorFile("http/derp_upgrade_websocket_without_derp_subprotocol.request"));
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_TRUE(p.head.hasToken("connection", "upgrade"));
    EXPECT_TRUE(p.head.hasToken("Upgrade", "WebSocket"));
    EXPECT_EQ(p.head.get("Sec-WebSocket-Protocol"), nullptr);
    EXPECT_EQ(*p.head.get("sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==");
    EXPECT_EQ(p.head.headers.size(), 6u);
  }
}

TEST(HttpVectors, EveryResponseFileMatchesIndex) {
  const nlohmann::json idx = loadVectorJson("http/index.json");
  size_t n = 0;
  for (const auto& ex : idx.at("exchanges")) {
    const std::string name = ex.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const std::string wire = readVectorFile("http/" + ex.at("response_file").get<std::string>());
    ASSERT_EQ(wire.size(), ex.at("response_len").get<size_t>());
    ResponseParse p = parseResponseHead(wire);
    ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;
    const std::string statusLine = ex.at("status_line").get<std::string>();
    EXPECT_EQ(statusLine, "HTTP/1.1 " + std::to_string(p.head.status) + " " + p.head.reason);
    EXPECT_EQ(headerPairs(p.head.headers), jsonPairs(ex.at("headers_in_order")));
    EXPECT_EQ(p.head.headLen, wire.size() - ex.at("body_len_as_received").get<size_t>());
    ++n;
  }
  EXPECT_EQ(n, 33u);
}

// ---------------------------------------------------------------------------
// Vectors: the upgrade heads inside the transcripts. DERP bytes follow the
// head in the same buffer and must not be consumed.

TEST(HttpVectors, TranscriptRequestAndResponseHeads) {
  size_t reqs = 0, resps = 0;
  for (const char* scen : {"a-normal", "b-fast-start-tls", "b2-fast-start-plain", "c-mesh-watcher", "d-websocket"}) {
    const nlohmann::json dec = loadVectorJson(std::string("transcripts/") + scen + "/decoded.json");
    for (const auto& conn : dec.at("connections")) {
      const std::string base = std::string("transcripts/") + scen + "/";
      SCOPED_TRACE(base + conn.at("c2s_file").get<std::string>());
      const std::string c2s = readVectorFile(base + conn.at("c2s_file").get<std::string>());
      const std::string s2c = readVectorFile(base + conn.at("s2c_file").get<std::string>());

      const auto& req = conn.at("http_request");
      ASSERT_FALSE(req.is_null());
      RequestParse p = parseRequestHead(c2s);
      ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;
      const size_t rawLen = req.at("raw_len").get<size_t>();
      EXPECT_EQ(p.head.headLen, rawLen);
      EXPECT_EQ(c2s.substr(0, rawLen), req.at("raw_text").get<std::string>());
      if (conn.contains("derp_stream_c2s_starts_at")) {
        EXPECT_EQ(p.head.headLen, conn.at("derp_stream_c2s_starts_at").get<size_t>());
      }
      EXPECT_EQ(p.head.method + " " + p.head.target + " HTTP/1." + std::to_string(p.head.versionMinor),
                req.at("start_line").get<std::string>());
      EXPECT_EQ(p.head.path, "/derp");
      EXPECT_EQ(p.head.query, "");
      EXPECT_EQ(headerPairs(p.head.headers), jsonPairs(req.at("headers_in_order")));
      EXPECT_TRUE(p.head.hasToken("Connection", "upgrade"));
      expectByteByByte(c2s, p.head.headLen);
      // The head followed by everything the client pipelined parses the same.
      for (size_t extra : {size_t(1), size_t(5), c2s.size() - rawLen}) {
        RequestParse q = parseRequestHead(std::string_view(c2s).substr(0, rawLen + extra));
        ASSERT_EQ(q.status, ParseStatus::Complete);
        EXPECT_EQ(q.head.headLen, rawLen);
      }
      ++reqs;

      const auto& resp = conn.at("http_response");
      ResponseParse r = parseResponseHead(s2c);
      if (resp.is_null()) {
        // Fast start: the server stream is DERP from byte 0.
        EXPECT_NE(r.status, ParseStatus::Complete);
        continue;
      }
      ASSERT_EQ(r.status, ParseStatus::Complete) << r.error;
      EXPECT_EQ(r.head.status, 101);
      EXPECT_EQ(r.head.reason, "Switching Protocols");
      EXPECT_EQ(r.head.headLen, resp.at("raw_len").get<size_t>());
      EXPECT_EQ("HTTP/1.1 101 " + r.head.reason, resp.at("start_line").get<std::string>());
      EXPECT_EQ(headerPairs(r.head.headers), jsonPairs(resp.at("headers_in_order")));
      for (size_t n = 0; n < r.head.headLen; ++n) {
        ASSERT_EQ(parseResponseHead(std::string_view(s2c).substr(0, n)).status, ParseStatus::Incomplete) << n;
      }
      ++resps;
    }
  }
  EXPECT_EQ(reqs, 10u);
  EXPECT_EQ(resps, 8u);
}

TEST(HttpVectors, DerpUpgradeResponseExact) {
  const std::string s2c = readVectorFile("transcripts/a-normal/conn1.s2c.bin");
  ResponseParse r = parseResponseHead(s2c);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.head.headLen, 172u);
  EXPECT_EQ(*r.head.get("derp-version"), "2");
  EXPECT_EQ(*r.head.get("Derp-Public-Key"), "443ecfd4c12b5426ed8f4f66816bd54033739805f82088ceafb022a911b7aa39");
  EXPECT_EQ(uint8_t(s2c[r.head.headLen]), 0x01);  // ServerKey frame type
}

// ---------------------------------------------------------------------------
// Request head: accepted forms

TEST(HttpRequestHead, MinimalAndFields) {
  RequestParse p = parseRequestHead("GET /derp HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_EQ(p.head.method, "GET");
  EXPECT_EQ(p.head.target, "/derp");
  EXPECT_EQ(p.head.path, "/derp");
  EXPECT_EQ(p.head.query, "");
  EXPECT_EQ(p.head.versionMinor, 1);
  ASSERT_EQ(p.head.headers.size(), 1u);
  EXPECT_EQ(p.head.headers[0].name, "Host");
  EXPECT_EQ(p.head.headers[0].value, "a");
  EXPECT_EQ(p.head.headLen, 31u);
}

TEST(HttpRequestHead, NoHeadersAndHttp10) {
  RequestParse p = parseRequestHead("GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_EQ(p.head.versionMinor, 0);
  EXPECT_TRUE(p.head.headers.empty());
  EXPECT_EQ(p.head.headLen, 18u);
}

TEST(HttpRequestHead, BareLfAndMixedLineEnds) {
  RequestParse p = parseRequestHead("GET /x HTTP/1.1\nHost: a\nX: 1\r\n\nrest");
  ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;
  EXPECT_EQ(p.head.headers.size(), 2u);
  EXPECT_EQ(p.head.headLen, std::string("GET /x HTTP/1.1\nHost: a\nX: 1\r\n\n").size());

  RequestParse q = parseRequestHead("GET /x HTTP/1.1\nHost: a\n\r\n");
  ASSERT_EQ(q.status, ParseStatus::Complete) << q.error;
  EXPECT_EQ(q.head.headLen, 26u);
}

TEST(HttpRequestHead, ValuesAreOwsTrimmedNamesKeptAsSent) {
  RequestParse p = parseRequestHead("GET / HTTP/1.1\r\nsec-WEBSOCKET-key: \t abc def \t\r\nEmpty:\r\nE2:   \r\n\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;
  ASSERT_EQ(p.head.headers.size(), 3u);
  EXPECT_EQ(p.head.headers[0].name, "sec-WEBSOCKET-key");
  EXPECT_EQ(p.head.headers[0].value, "abc def");
  EXPECT_EQ(*p.head.get("Sec-WebSocket-Key"), "abc def");
  EXPECT_EQ(p.head.headers[1].value, "");
  EXPECT_EQ(p.head.headers[2].value, "");
}

TEST(HttpRequestHead, ObsTextAndTabInValueAccepted) {
  RequestParse p = parseRequestHead("GET / HTTP/1.1\r\nX: a\tb\xc3\xa9\r\n\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete) << p.error;
  EXPECT_EQ(p.head.headers[0].value, "a\tb\xc3\xa9");
}

TEST(HttpRequestHead, GetIsFirstMatchCaseInsensitive) {
  RequestParse p = parseRequestHead("GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_EQ(*p.head.get("X-a"), "1");
  EXPECT_EQ(p.head.get("X-B"), nullptr);
}

TEST(HttpRequestHead, HasToken) {
  RequestParse p = parseRequestHead(
      "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nConnection:close\r\n"
      "Upgrade: DERP\r\nSec-WebSocket-Protocol: foo ,derp\t, bar\r\nX: upgrade-ish\r\n\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_TRUE(p.head.hasToken("connection", "upgrade"));
  EXPECT_TRUE(p.head.hasToken("Connection", "KEEP-ALIVE"));
  EXPECT_TRUE(p.head.hasToken("Connection", "close"));  // second field line
  EXPECT_TRUE(p.head.hasToken("Upgrade", "derp"));
  EXPECT_TRUE(p.head.hasToken("Sec-WebSocket-Protocol", "derp"));
  EXPECT_TRUE(p.head.hasToken("Sec-WebSocket-Protocol", "bar"));
  EXPECT_FALSE(p.head.hasToken("Sec-WebSocket-Protocol", "der"));
  EXPECT_FALSE(p.head.hasToken("X", "upgrade"));
  EXPECT_FALSE(p.head.hasToken("Missing", "x"));
}

TEST(HttpRequestHead, TargetForms) {
  {
    RequestParse p = parseRequestHead("GET /a/b?x=1&y=2?z HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.path, "/a/b");
    EXPECT_EQ(p.head.query, "x=1&y=2?z");
  }
  {
    RequestParse p = parseRequestHead("GET /? HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.path, "/");
    EXPECT_EQ(p.head.query, "");
  }
  {
    RequestParse p = parseRequestHead("CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.path, "example.com:443");
    EXPECT_EQ(p.head.query, "");
  }
  {
    RequestParse p = parseRequestHead("OPTIONS * HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.path, "*");
  }
  {
    RequestParse p = parseRequestHead("GET http://h:80/derp?q=1 HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.target, "http://h:80/derp?q=1");
    EXPECT_EQ(p.head.path, "/derp");
    EXPECT_EQ(p.head.query, "q=1");
  }
  {
    RequestParse p = parseRequestHead("GET HTTPS://h HTTP/1.1\r\n\r\n");
    ASSERT_EQ(p.status, ParseStatus::Complete);
    EXPECT_EQ(p.head.path, "/");
  }
}

TEST(HttpRequestHead, BytesAfterHeadNotConsumed) {
  const std::string head = "GET /derp HTTP/1.1\r\nUpgrade: DERP\r\n\r\n";
  std::string wire = head + std::string("\x02\x00\x00\x00\x68\r\n\r\n", 9) + "junk";
  RequestParse p = parseRequestHead(wire);
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_EQ(p.head.headLen, head.size());
}

TEST(HttpRequestHead, MaxHeadBoundary) {
  std::string head = "GET / HTTP/1.1\r\nX: ";
  const size_t limit = 200;
  head += std::string(limit - head.size() - 4, 'a');
  head += "\r\n\r\n";
  ASSERT_EQ(head.size(), limit);
  EXPECT_EQ(parseRequestHead(head, limit).status, ParseStatus::Complete);
  EXPECT_EQ(parseRequestHead(head, limit - 1).status, ParseStatus::TooLarge);
  // More bytes than maxHead buffered, but the head itself fits.
  EXPECT_EQ(parseRequestHead(head + std::string(1000, 'z'), limit).status, ParseStatus::Complete);
  // The final LF sits just past the limit.
  EXPECT_EQ(parseRequestHead(head + "z", limit - 1).status, ParseStatus::TooLarge);
  // Exactly maxHead bytes of an unfinished head: wait for more.
  EXPECT_EQ(parseRequestHead(std::string_view(head).substr(0, limit - 1), limit - 1).status,
            ParseStatus::Incomplete);
}

TEST(HttpRequestHead, ExactlyMaxHeadersAccepted) {
  std::string head = "GET / HTTP/1.1\r\n";
  for (size_t i = 0; i < kMaxHeaders; ++i) head += "H" + std::to_string(i) + ": v\r\n";
  RequestParse p = parseRequestHead(head + "\r\n");
  ASSERT_EQ(p.status, ParseStatus::Complete);
  EXPECT_EQ(p.head.headers.size(), kMaxHeaders);
}

// ---------------------------------------------------------------------------
// Request head: refusals

TEST(HttpRequestHead, OversizedHeadIsTooLarge) {
  std::string head = "GET / HTTP/1.1\r\nX: " + std::string(kMaxRequestHead, 'a');
  EXPECT_EQ(parseRequestHead(head).status, ParseStatus::TooLarge);
  EXPECT_EQ(parseRequestHead(head + "\r\n\r\n").status, ParseStatus::TooLarge);
  // No line end at all: as soon as the buffer passes the limit.
  std::string noLf(kMaxRequestHead, 'G');
  EXPECT_EQ(parseRequestHead(noLf).status, ParseStatus::Incomplete);
  noLf.push_back('G');
  EXPECT_EQ(parseRequestHead(noLf).status, ParseStatus::TooLarge);
}

TEST(HttpRequestHead, TooManyHeaders) {
  std::string head = "GET / HTTP/1.1\r\n";
  for (size_t i = 0; i <= kMaxHeaders; ++i) head += "H: v\r\n";
  EXPECT_EQ(parseRequestHead(head + "\r\n").status, ParseStatus::TooLarge);
  // Refused before the head is even complete.
  EXPECT_EQ(parseRequestHead(head).status, ParseStatus::TooLarge);
  // Also with bare LF.
  std::string lf = "GET / HTTP/1.1\n";
  for (size_t i = 0; i <= kMaxHeaders; ++i) lf += "H:v\n";
  EXPECT_EQ(parseRequestHead(lf).status, ParseStatus::TooLarge);
}

TEST(HttpRequestHead, BadRequestLines) {
  for (const char* line : {
           "GET /\r\n\r\n",
           "GET / HTTP/1.1 extra\r\n\r\n",
           "GET  / HTTP/1.1\r\n\r\n",
           "GET /  HTTP/1.1\r\n\r\n",
           " GET / HTTP/1.1\r\n\r\n",
           "GET / HTTP/1.1 \r\n\r\n",
           "GET / HTTP/2.0\r\n\r\n",
           "GET / HTTP/1.10\r\n\r\n",
           "GET / HTTP/1.x\r\n\r\n",
           "GET / http/1.1\r\n\r\n",
           "GET / HTTP/1\r\n\r\n",
           "G(T / HTTP/1.1\r\n\r\n",
           "GET derp HTTP/1.1\r\n\r\n",
           "GET /a\tb HTTP/1.1\r\n\r\n",
           "GET /a\x7f HTTP/1.1\r\n\r\n",
           "\r\n\r\n",
           "\n\n",
           "\r\nGET / HTTP/1.1\r\n\r\n",
       }) {
    RequestParse p = parseRequestHead(line);
    EXPECT_EQ(p.status, ParseStatus::Invalid) << line;
    if (p.status == ParseStatus::Invalid) {
      EXPECT_FALSE(p.error.empty());
    }
  }
  // NUL and CR inside the request line.
  EXPECT_EQ(parseRequestHead(std::string("GET /\0 HTTP/1.1\r\n\r\n", 20)).status, ParseStatus::Invalid);
  EXPECT_EQ(parseRequestHead("GET /\r HTTP/1.1\r\n\r\n").status, ParseStatus::Invalid);
}

TEST(HttpRequestHead, BadRequestLineRefusedBeforeHeadEnds) {
  EXPECT_EQ(parseRequestHead(std::string_view("\x16\x03\x01\x02\x00\n\x01", 7)).status, ParseStatus::Invalid);
  EXPECT_EQ(parseRequestHead("SSH-2.0-OpenSSH_9.2\r\n").status, ParseStatus::Invalid);
  // A good request line with the head still open is just Incomplete.
  EXPECT_EQ(parseRequestHead("GET / HTTP/1.1\r\nHost: x\r\n").status, ParseStatus::Incomplete);
}

TEST(HttpRequestHead, BadFieldLines) {
  for (const std::string& fields : {
           std::string("NoColon\r\n"),
           std::string(": empty-name\r\n"),
           std::string("Sp ace: x\r\n"),
           std::string("Name : x\r\n"),
           std::string("Na(me: x\r\n"),
           std::string("X: a\r\n folded\r\n"),
           std::string("X: a\r\n\tfolded\r\n"),
           std::string("X: a\0b\r\n", 8),
           std::string("X\0: ab\r\n", 8),
           std::string("X: a\x01\r\n"),
           std::string("X: a\x7f\r\n"),
           std::string("X: a\rb\r\n"),
           std::string("X\x80: a\r\n"),
       }) {
    RequestParse p = parseRequestHead("GET / HTTP/1.1\r\n" + fields + "\r\n");
    EXPECT_EQ(p.status, ParseStatus::Invalid) << fields;
    EXPECT_TRUE(p.head.headers.empty());
  }
}

TEST(HttpRequestHead, IncompletePrefixes) {
  for (const char* s : {"", "G", "GET / HTTP/1.1", "GET / HTTP/1.1\r", "GET / HTTP/1.1\r\n",
                        "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r",
                        "GET / HTTP/1.1\nHost: a\n"}) {
    EXPECT_EQ(parseRequestHead(s).status, ParseStatus::Incomplete) << s;
  }
}

TEST(HttpRequestHead, ByteByByteLargeHead) {
  // A head near the limit fed one byte at a time stays Incomplete until the
  // end (exercises the rescan cost as well as correctness).
  std::string head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 90; ++i) head += "X-Pad-" + std::to_string(i) + ": " + std::string(160, 'p') + "\r\n";
  head += "\r\n";
  ASSERT_LT(head.size(), kMaxRequestHead);
  expectByteByByte(head, head.size());
}

// ---------------------------------------------------------------------------
// Response head

TEST(HttpResponseHead, StatusLineForms) {
  {
    ResponseParse r = parseResponseHead("HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n\r\n\x01");
    ASSERT_EQ(r.status, ParseStatus::Complete);
    EXPECT_EQ(r.head.status, 101);
    EXPECT_EQ(r.head.reason, "Switching Protocols");
    EXPECT_EQ(*r.head.get("upgrade"), "DERP");
    EXPECT_EQ(r.head.headLen, 51u);
  }
  {
    ResponseParse r = parseResponseHead("HTTP/1.0 200\n\n");
    ASSERT_EQ(r.status, ParseStatus::Complete);
    EXPECT_EQ(r.head.status, 200);
    EXPECT_EQ(r.head.reason, "");
  }
  for (const char* bad : {"HTTP/1.1\r\n\r\n", "HTTP/1.1 10 OK\r\n\r\n", "HTTP/1.1 1011 OK\r\n\r\n",
                          "HTTP/1.1 abc OK\r\n\r\n", "HTTP/2 101 OK\r\n\r\n", "http/1.1 101 OK\r\n\r\n",
                          "HTTP/1.1 101 OK\r\nBad\r\n\r\n", "HTTP/1.1 101 O\x01K\r\n\r\n",
                          "HTTP/1.1 099 x\r\n\r\n"}) {
    EXPECT_EQ(parseResponseHead(bad).status, ParseStatus::Invalid) << bad;
  }
  EXPECT_EQ(parseResponseHead("HTTP/1.1 101 Switching").status, ParseStatus::Incomplete);
  EXPECT_EQ(parseResponseHead("HTTX/1.1 101 Switching\r\n").status, ParseStatus::Invalid);
  EXPECT_EQ(parseResponseHead(std::string(kMaxRequestHead + 1, 'H')).status, ParseStatus::TooLarge);
}

// ---------------------------------------------------------------------------
// Helpers

TEST(HttpHelpers, Iequals) {
  EXPECT_TRUE(iequals("Upgrade", "uPGRADE"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("derp", "derp "));
  EXPECT_FALSE(iequals("a", "b"));
  EXPECT_FALSE(iequals("\xc3\xa9", "\xc3\x89"));  // ASCII only
  EXPECT_TRUE(iequals("x-1_[", "X-1_["));
  EXPECT_FALSE(iequals("@", "`"));  // 0x40 / 0x60 are not letters
}

TEST(HttpQuery, Values) {
  EXPECT_EQ(queryValue("q=localhost", "q"), "localhost");
  EXPECT_EQ(queryValue("a=1&q=x&q=y", "q"), "x");
  EXPECT_EQ(queryValue("q=a+b%20c%2Bd", "q"), "a b c+d");
  EXPECT_EQ(queryValue("%71=v", "q"), "v");          // encoded key
  EXPECT_EQ(queryValue("q+1=v", "q 1"), "v");
  EXPECT_EQ(queryValue("q", "q"), "");               // no '='
  EXPECT_EQ(queryValue("q=", "q"), "");
  EXPECT_EQ(queryValue("q=a=b", "q"), "a=b");
  EXPECT_EQ(queryValue("q=%e2%9c%93", "q"), "\xe2\x9c\x93");
  EXPECT_EQ(queryValue("q=%00", "q"), std::string(1, '\0'));
  EXPECT_EQ(queryValue("", "q"), std::nullopt);
  EXPECT_EQ(queryValue("qq=1&Q=2", "q"), std::nullopt);
  EXPECT_EQ(queryValue("&&q=1&", "q"), "1");
}

TEST(HttpQuery, BadEscapesAndSemicolonsSkippedLikeGo) {
  EXPECT_EQ(queryValue("q=%zz", "q"), std::nullopt);
  EXPECT_EQ(queryValue("q=%4", "q"), std::nullopt);
  EXPECT_EQ(queryValue("q=%", "q"), std::nullopt);
  EXPECT_EQ(queryValue("q=%zz&q=ok", "q"), "ok");
  EXPECT_EQ(queryValue("q=1;x=2", "q"), std::nullopt);
  EXPECT_EQ(queryValue("q=1;x=2&q=3", "q"), "3");
  EXPECT_EQ(queryValue("debugkey=s3cr%65t", "debugkey"), "s3cret");
}

TEST(HttpDate, ImfFixdate) {
  EXPECT_EQ(httpDate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(httpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110 example
  EXPECT_EQ(httpDate(951868799), "Tue, 29 Feb 2000 23:59:59 GMT");
  // The Date header the real derper sent in http/bootstrap_dns.response.
  EXPECT_EQ(httpDate(1795558049), "Tue, 24 Nov 2026 22:07:29 GMT");
}

}  // namespace
}  // namespace derpd::http
