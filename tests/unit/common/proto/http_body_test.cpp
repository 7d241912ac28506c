// Response bodies for derpd's HTTP clients: chunked, Content-Length, to EOF.
#include <gtest/gtest.h>

#include "common/proto/http/body.hpp"

namespace derpd::http {
namespace {

ResponseHead head(std::string raw) {
  auto p = parseResponseHead(raw);
  EXPECT_EQ(p.status, ParseStatus::Complete);
  return p.head;
}

TEST(Chunked, DecodesWithExtensionsTrailersAndBareLf) {
  auto p = decodeChunked("4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n", 1000);
  ASSERT_EQ(p.status, BodyStatus::Complete) << p.error;
  EXPECT_EQ(p.body, "Wikipedia in\r\n\r\nchunks.");
  p = decodeChunked("3\nabc\n0\n\n", 1000);
  ASSERT_EQ(p.status, BodyStatus::Complete);
  EXPECT_EQ(p.body, "abc");
}

TEST(Chunked, IncompleteInvalidAndTooLarge) {
  EXPECT_EQ(decodeChunked("4\r\nWik", 1000).status, BodyStatus::Incomplete);
  EXPECT_EQ(decodeChunked("4\r\nWiki\r\n0\r\n", 1000).status, BodyStatus::Incomplete);
  EXPECT_EQ(decodeChunked("zz\r\n", 1000).status, BodyStatus::Invalid);
  EXPECT_EQ(decodeChunked("\r\n", 1000).status, BodyStatus::Invalid);
  EXPECT_EQ(decodeChunked("4\r\nWikiX\r\n", 1000).status, BodyStatus::Invalid);
  EXPECT_EQ(decodeChunked("1000000000000000\r\n", 1000).status, BodyStatus::Invalid);
  EXPECT_EQ(decodeChunked("5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n", 8).status, BodyStatus::TooLarge);
  EXPECT_EQ(decodeChunked("fffffffffffffff\r\n", 8).status, BodyStatus::TooLarge);
  EXPECT_EQ(decodeChunked(std::string(5000, '1'), 8).status, BodyStatus::Invalid);
}

TEST(ResponseBody, ContentLengthChunkedAndEof) {
  auto cl = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
  EXPECT_EQ(responseBody(cl, "abc", false, 100).status, BodyStatus::Incomplete);
  EXPECT_EQ(responseBody(cl, "abc", true, 100).status, BodyStatus::Invalid);
  auto p = responseBody(cl, "abcdefg", false, 100);
  ASSERT_EQ(p.status, BodyStatus::Complete);
  EXPECT_EQ(p.body, "abcde");
  EXPECT_EQ(responseBody(cl, "abcde", false, 4).status, BodyStatus::TooLarge);
  EXPECT_EQ(responseBody(head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), "", false, 100).status,
            BodyStatus::Invalid);

  auto ch = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(responseBody(ch, "3\r\nabc\r\n0\r\n\r\n", false, 100).body, "abc");
  EXPECT_EQ(responseBody(ch, "3\r\nabc\r\n", true, 100).status, BodyStatus::Invalid);
  EXPECT_EQ(responseBody(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), "", false, 100).status,
            BodyStatus::Invalid);

  auto eof = head("HTTP/1.1 200 OK\r\n\r\n");
  EXPECT_EQ(responseBody(eof, "abc", false, 100).status, BodyStatus::Incomplete);
  EXPECT_EQ(responseBody(eof, "abc", true, 100).body, "abc");
  EXPECT_EQ(responseBody(eof, "abcdef", false, 4).status, BodyStatus::TooLarge);
  EXPECT_EQ(responseBody(head("HTTP/1.1 204 No Content\r\n\r\n"), "junk", false, 100).status, BodyStatus::Complete);
}

}  // namespace
}  // namespace derpd::http
