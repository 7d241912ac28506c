// DNS codec: see dns.hpp.
#include "common/proto/dns/dns.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>

namespace derpd::dns {

namespace {

inline uint16_t getU16BE(const uint8_t* p) { return uint16_t((uint16_t(p[0]) << 8) | p[1]); }
inline void appendU16BE(Bytes& out, uint16_t v) {
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

inline uint8_t asciiLower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? uint8_t(c + ('a' - 'A')) : c; }

// Presentation name (already validated) -> lowercased wire form.
std::string toWireLower(std::string_view name) {
  std::string out;
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    out.push_back(char(dot - start));
    for (size_t i = start; i < dot; i++) out.push_back(char(asciiLower(uint8_t(name[i]))));
    start = dot + 1;
  }
  out.push_back('\0');
  return out;
}

// Reads the name at `off`. On success returns the offset just past the name
// as it sits at `off` (after its root octet or its first pointer) and puts
// the lowercased wire form in *wire. Pointers must point strictly before the
// start of the label run that contains them, so every jump moves backwards
// and no loop is possible; jumps and the wire length are bounded as well.
Result<size_t> readName(ByteView msg, size_t off, std::string* wire) {
  wire->clear();
  size_t pos = off;
  size_t runStart = off;            // start of the label run being read
  std::optional<size_t> resumeAt;   // set at the first pointer
  size_t jumps = 0;
  for (;;) {
    if (pos >= msg.size()) return makeError("dns: name overruns message");
    const uint8_t len = msg[pos];
    switch (len & 0xc0) {
      case 0x00: {
        if (len == 0) {
          wire->push_back('\0');
          if (wire->size() > kMaxNameWireLen) return makeError("dns: name too long");
          return resumeAt ? *resumeAt : pos + 1;
        }
        if (msg.size() - pos - 1 < len) return makeError("dns: label overruns message");
        if (wire->size() + 1 + len + 1 > kMaxNameWireLen) return makeError("dns: name too long");
        wire->push_back(char(len));
        for (size_t i = 0; i < len; i++) wire->push_back(char(asciiLower(msg[pos + 1 + i])));
        pos += 1 + len;
        break;
      }
      case 0xc0: {
        if (msg.size() - pos < 2) return makeError("dns: pointer overruns message");
        const size_t target = getU16BE(&msg[pos]) & 0x3fff;
        if (target >= runStart) return makeError("dns: compression pointer does not point backwards");
        if (++jumps > kMaxPointerJumps) return makeError("dns: too many compression pointers");
        if (!resumeAt) resumeAt = pos + 2;
        pos = runStart = target;
        break;
      }
      default:
        return makeError("dns: reserved label type");
    }
  }
}

struct Record {
  std::string owner;  // lowercased wire form
  RrType type;
  size_t rdata;       // offset of rdata in the message
  size_t rdlen;
  std::string target;  // CNAME only
};

bool txtStrings(ByteView msg, size_t off, size_t len, std::vector<std::string>* out) {
  const size_t end = off + len;
  while (off < end) {
    const size_t n = msg[off++];
    if (end - off < n) return false;
    if (out) out->emplace_back(reinterpret_cast<const char*>(&msg[off]), n);
    off += n;
  }
  return true;
}

}  // namespace

bool isValidQueryName(std::string_view s) {
  if (s == ".") return true;
  const size_t l = s.size();
  if (l == 0 || l > 254 || (l == 254 && s[l - 1] != '.')) return false;
  char last = '.';
  bool nonNumeric = false;
  size_t partlen = 0;
  for (const char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
      nonNumeric = true;
      partlen++;
    } else if (c >= '0' && c <= '9') {
      partlen++;
    } else if (c == '-') {
      if (last == '.') return false;
      partlen++;
      nonNumeric = true;
    } else if (c == '.') {
      if (last == '.' || last == '-') return false;
      if (partlen > kMaxLabelLen || partlen == 0) return false;
      partlen = 0;
    } else {
      return false;
    }
    last = c;
  }
  if (last == '-' || partlen > kMaxLabelLen) return false;
  return nonNumeric;
}

Result<Bytes> buildQuery(uint16_t id, std::string_view name, RrType type) {
  if (!isValidQueryName(name)) return makeError("dns: invalid name \"" + std::string(name) + "\"");
  Bytes out;
  out.reserve(kHeaderLen + name.size() + 2 + 4);
  appendU16BE(out, id);
  appendU16BE(out, kFlagRd);
  appendU16BE(out, 1);  // qdcount
  appendU16BE(out, 0);
  appendU16BE(out, 0);
  appendU16BE(out, 0);
  // Keep the caller's case in the query; only the comparison folds it.
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    out.push_back(uint8_t(dot - start));
    out.insert(out.end(), name.begin() + start, name.begin() + dot);
    start = dot + 1;
  }
  out.push_back(0);
  appendU16BE(out, uint16_t(type));
  appendU16BE(out, kClassIn);
  return out;
}

Result<Response> parseResponse(ByteView msg, uint16_t id, std::string_view name, RrType type) {
  if (msg.size() < kHeaderLen) return makeError("dns: short message");
  if (msg.size() > kMaxMessage) return makeError("dns: message too long");
  if (!isValidQueryName(name)) return makeError("dns: invalid name");
  Response r;
  r.id = getU16BE(&msg[0]);
  const uint16_t flags = getU16BE(&msg[2]);
  if (r.id != id) return makeError("dns: id mismatch");
  if (!(flags & kFlagQr)) return makeError("dns: not a response");
  if (flags & kOpcodeMask) return makeError("dns: opcode is not QUERY");
  if (getU16BE(&msg[4]) != 1) return makeError("dns: question count is not 1");
  const size_t ancount = getU16BE(&msg[6]);
  r.truncated = (flags & kFlagTc) != 0;
  r.rawRcode = uint8_t(flags & kRcodeMask);
  r.rcode = Rcode(r.rawRcode);

  std::string owner;
  auto qend = readName(msg, kHeaderLen, &owner);
  if (!qend) return std::move(qend).takeError();
  size_t off = *qend;
  if (msg.size() - off < 4) return makeError("dns: question overruns message");
  const std::string qwire = toWireLower(name);
  if (owner != qwire || getU16BE(&msg[off]) != uint16_t(type) || getU16BE(&msg[off + 2]) != kClassIn)
    return makeError("dns: question mismatch");
  off += 4;
  if (r.truncated || r.rawRcode != 0) return r;

  std::vector<Record> recs;
  for (size_t i = 0; i < ancount; i++) {
    auto end = readName(msg, off, &owner);
    if (!end) return std::move(end).takeError();
    off = *end;
    if (msg.size() - off < 10) return makeError("dns: record header overruns message");
    const uint16_t rtype = getU16BE(&msg[off]);
    const uint16_t rclass = getU16BE(&msg[off + 2]);
    const size_t rdlen = getU16BE(&msg[off + 8]);
    off += 10;
    if (msg.size() - off < rdlen) return makeError("dns: rdata overruns message");
    Record rec{owner, RrType(rtype), off, rdlen, {}};
    off += rdlen;
    switch (RrType(rtype)) {
      case RrType::A:
        if (rdlen != 4) return makeError("dns: A rdata length is not 4");
        break;
      case RrType::Aaaa:
        if (rdlen != 16) return makeError("dns: AAAA rdata length is not 16");
        break;
      case RrType::Txt:
        if (!txtStrings(msg, rec.rdata, rdlen, nullptr)) return makeError("dns: malformed TXT rdata");
        break;
      case RrType::Cname: {
        // The name may point anywhere earlier, but must fill the rdata exactly.
        auto tend = readName(msg.first(rec.rdata + rdlen), rec.rdata, &rec.target);
        if (!tend || *tend != rec.rdata + rdlen) return makeError("dns: malformed CNAME rdata");
        break;
      }
      default:
        continue;  // other types: skipped
    }
    if (rclass != kClassIn) continue;
    recs.push_back(std::move(rec));
  }

  // Follow CNAMEs from the question name within this message.
  std::string cur = qwire;
  for (;;) {
    bool found = false;
    for (const Record& rec : recs) {
      if (rec.type != type || rec.owner != cur) continue;
      found = true;
      const uint8_t* p = &msg[rec.rdata];
      if (type == RrType::A) {
        std::array<uint8_t, 4> v{};
        std::copy(p, p + 4, v.begin());
        r.a.push_back(v);
      } else if (type == RrType::Aaaa) {
        std::array<uint8_t, 16> v{};
        std::copy(p, p + 16, v.begin());
        r.aaaa.push_back(v);
      } else if (type == RrType::Txt) {
        std::vector<std::string> strings;
        txtStrings(msg, rec.rdata, rec.rdlen, &strings);
        r.txt.push_back(std::move(strings));
      }
    }
    if (found || type == RrType::Cname) break;
    const Record* cname = nullptr;
    for (const Record& rec : recs) {
      if (rec.type == RrType::Cname && rec.owner == cur) {
        cname = &rec;
        break;
      }
    }
    if (!cname) break;
    if (++r.cnameHops > kMaxCnameChain) return makeError("dns: CNAME chain too long or looping");
    cur = cname->target;
  }
  return r;
}

std::string formatIpv4(const std::array<uint8_t, 4>& a) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
  return buf;
}

std::string formatIpv6(const std::array<uint8_t, 16>& a) {
  bool mapped = a[10] == 0xff && a[11] == 0xff;
  for (size_t i = 0; i < 10 && mapped; i++) mapped = a[i] == 0;
  if (mapped) return formatIpv4({a[12], a[13], a[14], a[15]});
  uint16_t g[8];
  for (size_t i = 0; i < 8; i++) g[i] = getU16BE(&a[2 * i]);
  // netip.Addr.string6: the first longest run of >= 2 zero groups.
  size_t zeroStart = 255, zeroEnd = 255;
  for (size_t i = 0; i < 8; i++) {
    size_t j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i >= 2 && j - i > zeroEnd - zeroStart) {
      zeroStart = i;
      zeroEnd = j;
    }
  }
  std::string out;
  char buf[8];
  for (size_t i = 0; i < 8; i++) {
    if (i == zeroStart) {
      out += "::";
      i = zeroEnd;
      if (i >= 8) break;
    } else if (i > 0) {
      out += ':';
    }
    std::snprintf(buf, sizeof buf, "%x", unsigned(g[i]));
    out += buf;
  }
  return out;
}

std::string rcodeName(uint8_t rcode) {
  switch (rcode) {
    case 0: return "NOERROR";
    case 1: return "FORMERR";
    case 2: return "SERVFAIL";
    case 3: return "NXDOMAIN";
    case 4: return "NOTIMP";
    case 5: return "REFUSED";
    default: return "RCODE" + std::to_string(rcode);
  }
}

}  // namespace derpd::dns
