// tailcfg.DERPMap with Go encoding/json semantics (reference commit 209567e7a0,
// built with Go 1.23).
//
// Parsing goes through nlohmann's SAX interface: no DOM for untrusted input,
// nesting bounded by kMaxDepth, input size checked first. The handler decodes
// into a model of the Go values (pointers that can be nil, a slice's length
// and capacity) because Go's decoder reuses what a repeated key already
// filled in: a second "HomeParams" or "Nodes" merges into the first, a
// second "Regions" or "RegionScore" adds to the map, while a repeated key
// inside a map replaces that entry (Go decodes every map value from zero).
// A nil *DERPRegion or *DERPNode is held as a zero Region or Node (DerpMap
// has no nil): Go decodes into a new zero struct where the pointer is nil,
// so merging into a zero value gives the same result.
//
// Error precedence is Go's: a syntax error anywhere (json.Unmarshal checks
// the whole input first) wins over a type error, and of several type errors
// the first is reported.
//
// nlohmann and Go disagree on a few inputs, so the text first goes through
// normalizeGoJson() (common/util/go_json.hpp) (as common/proto/derp/client_info.cpp does):
//  - Go replaces invalid UTF-8 (per byte) and unpaired surrogate escapes with
//    U+FFFD; nlohmann rejects both. The pre-pass does Go's replacement.
//  - Go accepts numbers of any magnitude where it skips a value; nlohmann
//    rejects those that overflow a double. The pre-pass rewrites such a
//    number to 0.0 and records its position in document order, so the
//    handler still rejects it for an int or float64 field.
//  - nlohmann stops at a NUL byte and skips a leading UTF-8 BOM; Go rejects
//    both. The pre-pass rejects them.
#include "common/proto/derpmap/derpmap.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "common/util/go_json.hpp"

namespace derpd::derpmap {

namespace {


// ---------------------------------------------------------------------------
// The Go values being decoded

// []*DERPNode as Go's decoder leaves it: backing[0, len) is the slice. A
// repeated "Nodes" decodes element i into the *DERPNode already at index i,
// and a shorter array only reslices, so a later longer one finds the old
// elements again past `len`. (They stay in Go's backing array: it grows only
// when len == cap, copying everything, so its capacity never changes the
// result and is not modelled.)
struct GoNodes {
  std::vector<Node> backing;
  size_t len = 0;
};

struct GoRegion {
  Region fields;  // fields.nodes is unused until toDerpMap()
  GoNodes nodes;
};

struct GoDerpMap {
  // Engaged: HomeParams is non-nil; the map is its RegionScore (nil and
  // empty are the same here: both are omitted on output).
  std::optional<std::map<int, double>> homeParams;
  std::map<int, GoRegion> regions;
  bool omitDefaultRegions = false;
};

// strconv.ParseInt(s, 10, 64) that must also fit an int32: an optional sign,
// then one or more ASCII digits (leading zeros allowed).
bool parseGoIntKey(std::string_view s, int& out) {
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  if (i == s.size()) return false;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
    if (v > int64_t(std::numeric_limits<int>::max()) + 1) return false;
  }
  if (neg) v = -v;
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) return false;
  out = int(v);
  return true;
}

// A key or token made safe for a one-line error message.
std::string printable(std::string_view s) {
  constexpr size_t kMax = 64;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += char(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

// ---------------------------------------------------------------------------
// SAX handler

// Where the next JSON value goes.
enum class Into : uint8_t {
  Skip,         // unknown key, or after an error: any value, ignored
  Top,          // the top-level value: the DERPMap itself
  String,       // Go string
  Int,          // Go int (here: int32)
  Bool,         // Go bool
  Float,        // Go float64
  HomeParams,   // *DERPHomeParams
  RegionScore,  // map[int]float64
  Regions,      // map[int]*DERPRegion
  Region,       // a *DERPRegion map value
  Nodes,        // []*DERPNode
  Node,         // a *DERPNode slice element
};

struct Target {
  Into into = Into::Skip;
  std::string* str = nullptr;
  int* num = nullptr;
  bool* flag = nullptr;
  double* real = nullptr;
  GoRegion* region = nullptr;
  GoNodes* nodes = nullptr;
  Node* node = nullptr;
};

enum class FrameKind : uint8_t { Skip, DerpMap, HomeParams, RegionScore, Regions, Region, Nodes, Node };

struct Frame {
  FrameKind kind = FrameKind::Skip;
  Target next;        // set by key() (objects) or per element (Nodes)
  std::string label;  // path segment of the member being decoded: "Regions", "900", "[1]"
  std::map<int, double>* scores = nullptr;  // RegionScore
  GoRegion* region = nullptr;               // Region
  GoNodes* nodes = nullptr;                 // Nodes
  size_t index = 0;                         // Nodes: elements seen so far
  Node* node = nullptr;                     // Node
};

struct FieldName {
  std::string_view name;
  int id;
};

// Struct fields in declaration order, as tailcfg names them in JSON.
constexpr FieldName kMapFields[] = {{"HomeParams", 0}, {"Regions", 1}, {"omitDefaultRegions", 2}};
constexpr FieldName kHomeParamsFields[] = {{"RegionScore", 0}};
constexpr FieldName kRegionFields[] = {{"RegionID", 0},  {"RegionCode", 1}, {"RegionName", 2},
                                       {"Latitude", 3},  {"Longitude", 4},  {"Avoid", 5},
                                       {"Nodes", 6}};
constexpr FieldName kNodeFields[] = {
    {"Name", 0},     {"RegionID", 1}, {"HostName", 2},  {"CertName", 3},
    {"IPv4", 4},     {"IPv6", 5},     {"STUNPort", 6},  {"STUNOnly", 7},
    {"DERPPort", 8}, {"InsecureForTests", 9}, {"STUNTestIP", 10}, {"CanPort80", 11}};

template <size_t N>
const FieldName* findField(const FieldName (&fields)[N], std::string_view key) {
  // Go first looks for an exact match, then for a folded one; the names of
  // one struct are distinct under folding, so one pass finds the same field.
  for (const FieldName& f : fields) {
    if (goJsonNameMatches(key, f.name)) return &f;
  }
  return nullptr;
}

class Handler {
 public:
  using json = nlohmann::json;

  explicit Handler(std::vector<size_t> overflowed) : overflowed_(std::move(overflowed)) {}

  GoDerpMap& result() { return map_; }
  const std::string& fatalError() const { return fatal_; }
  const std::string& syntaxError() const { return syntax_; }
  const std::string& typeError() const { return type_; }

  bool null() {
    Target t = take();
    switch (t.into) {
      case Into::HomeParams: map_.homeParams.reset(); break;
      case Into::RegionScore: *scoresOf() = {}; break;
      case Into::Regions: map_.regions.clear(); break;
      case Into::Region: *t.region = GoRegion{}; break;  // a nil *DERPRegion
      case Into::Nodes: *t.nodes = GoNodes{}; break;     // a nil slice
      case Into::Node: *t.node = Node{}; break;          // a nil *DERPNode
      default: break;  // null leaves a string, number or bool unchanged
    }
    return true;
  }

  bool boolean(bool v) {
    Target t = take();
    if (t.into == Into::Bool) {
      *t.flag = v;
    } else if (t.into != Into::Skip) {
      mismatch(t, "bool");
    }
    return true;
  }

  // nlohmann reports a literal with a '-' sign and no fraction or exponent
  // that fits an int64 here, and one without a sign through number_unsigned.
  bool number_integer(json::number_integer_t v) {
    const bool overflowed = countNumber();
    Target t = take();
    if (overflowed) return overflowNumber(t);
    switch (t.into) {
      case Into::Int:
        if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
          return typeErrorAt("number " + std::to_string(v) + " out of int32 range");
        }
        *t.num = int(v);
        break;
      case Into::Float:
        *t.real = v == 0 ? -0.0 : double(v);  // "-0" is negative zero in Go too
        break;
      case Into::Skip: break;
      default: mismatch(t, "number");
    }
    return true;
  }

  bool number_unsigned(json::number_unsigned_t v) {
    const bool overflowed = countNumber();
    Target t = take();
    if (overflowed) return overflowNumber(t);
    switch (t.into) {
      case Into::Int:
        if (v > json::number_unsigned_t(std::numeric_limits<int>::max())) {
          return typeErrorAt("number " + std::to_string(v) + " out of int32 range");
        }
        *t.num = int(v);
        break;
      case Into::Float: *t.real = double(v); break;
      case Into::Skip: break;
      default: mismatch(t, "number");
    }
    return true;
  }

  // A fraction, an exponent, or an integer beyond 64 bits.
  bool number_float(json::number_float_t v, const json::string_t& raw) {
    const bool overflowed = countNumber();
    Target t = take();
    if (overflowed) return overflowNumber(t);
    switch (t.into) {
      case Into::Int:
        // Go decodes an int with strconv.ParseInt: 1.5, 2.0 and 2e0 all fail.
        return typeErrorAt("want an integer, got number " + printable(raw));
      case Into::Float: *t.real = v; break;
      case Into::Skip: break;
      default: mismatch(t, "number");
    }
    return true;
  }

  bool string(json::string_t& v) {
    Target t = take();
    if (t.into == Into::String) {
      *t.str = std::move(v);
    } else if (t.into != Into::Skip) {
      mismatch(t, "string");
    }
    return true;
  }

  bool binary(json::binary_t&) { return fail("unexpected binary value"); }

  bool start_object(std::size_t) {
    Target t = take();
    Frame f;
    switch (t.into) {
      case Into::Top: f.kind = FrameKind::DerpMap; break;
      case Into::Skip: f.kind = FrameKind::Skip; break;
      case Into::HomeParams:
        if (!map_.homeParams) map_.homeParams.emplace();  // else Go decodes into the same struct
        f.kind = FrameKind::HomeParams;
        break;
      case Into::RegionScore:
        f.kind = FrameKind::RegionScore;  // entries are added to the existing map
        f.scores = scoresOf();
        break;
      case Into::Regions: f.kind = FrameKind::Regions; break;
      case Into::Region:  // already zero: Go decodes every map value from zero
        f.kind = FrameKind::Region;
        f.region = t.region;
        break;
      case Into::Node:  // merged into what an earlier "Nodes" left at this index
        f.kind = FrameKind::Node;
        f.node = t.node;
        break;
      default:
        mismatch(t, "object");
        f.kind = FrameKind::Skip;
    }
    return push(std::move(f));
  }

  bool end_object() {
    stack_.pop_back();
    return true;
  }

  bool start_array(std::size_t) {
    Target t = take();
    Frame f;
    if (t.into == Into::Nodes) {
      f.kind = FrameKind::Nodes;
      f.nodes = t.nodes;
    } else {
      if (t.into != Into::Skip) mismatch(t, "array");
      f.kind = FrameKind::Skip;
    }
    return push(std::move(f));
  }

  bool end_array() {
    Frame& f = stack_.back();
    if (f.kind == FrameKind::Nodes) {
      if (f.index == 0) {
        *f.nodes = GoNodes{};  // Go: an empty array makes a new empty slice
      } else if (f.index < f.nodes->len) {
        f.nodes->len = f.index;  // shorter: resliced, the backing array stays
      }
    }
    stack_.pop_back();
    return true;
  }

  bool key(json::string_t& k) {
    Frame& f = stack_.back();
    f.next = Target{};
    f.label.clear();
    switch (f.kind) {
      case FrameKind::Skip:
      case FrameKind::Nodes: break;
      case FrameKind::DerpMap:
        if (const FieldName* fn = findField(kMapFields, k)) {
          f.label = fn->name;
          if (fn->id == 0) f.next.into = Into::HomeParams;
          if (fn->id == 1) f.next.into = Into::Regions;
          if (fn->id == 2) f.next = boolField(&map_.omitDefaultRegions);
        }
        break;
      case FrameKind::HomeParams:
        if (const FieldName* fn = findField(kHomeParamsFields, k)) {
          f.label = fn->name;
          f.next.into = Into::RegionScore;
        }
        break;
      case FrameKind::RegionScore: {
        f.label = printable(k);
        int id = 0;
        if (!parseGoIntKey(k, id)) {
          badKey(k);
          break;
        }
        double& score = (*f.scores)[id];
        score = 0;  // Go decodes a map value from zero: null stores 0
        f.next.into = Into::Float;
        f.next.real = &score;
        break;
      }
      case FrameKind::Regions: {
        f.label = printable(k);
        int id = 0;
        if (!parseGoIntKey(k, id)) {
          badKey(k);
          break;
        }
        GoRegion& slot = map_.regions[id];
        slot = GoRegion{};  // Go decodes a map value from zero
        f.next.into = Into::Region;
        f.next.region = &slot;
        break;
      }
      case FrameKind::Region:
        if (const FieldName* fn = findField(kRegionFields, k)) {
          f.label = fn->name;
          f.next = regionField(*f.region, fn->id);
        }
        break;
      case FrameKind::Node:
        if (const FieldName* fn = findField(kNodeFields, k)) {
          f.label = fn->name;
          f.next = nodeField(f.node, fn->id);
        }
        break;
    }
    return true;
  }

  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) {
    if (syntax_.empty()) {
      // nlohmann quotes the token it stopped in, which can be a whole string.
      std::string_view what = ex.what();
      constexpr size_t kMax = 200;
      if (what.size() > kMax) {
        size_t cut = kMax;
        while (cut > 0 && (static_cast<unsigned char>(what[cut]) & 0xC0) == 0x80) --cut;
        what = what.substr(0, cut);
      }
      syntax_ = "invalid JSON at byte " + std::to_string(pos) + ": " + std::string(what);
      if (what.size() < std::strlen(ex.what())) syntax_ += "...";
    }
    return false;
  }

 private:
  static Target stringField(std::string* p) {
    Target t;
    t.into = Into::String;
    t.str = p;
    return t;
  }
  static Target intField(int* p) {
    Target t;
    t.into = Into::Int;
    t.num = p;
    return t;
  }
  static Target boolField(bool* p) {
    Target t;
    t.into = Into::Bool;
    t.flag = p;
    return t;
  }
  static Target floatField(double* p) {
    Target t;
    t.into = Into::Float;
    t.real = p;
    return t;
  }

  static Target regionField(GoRegion& r, int id) {
    switch (id) {
      case 0: return intField(&r.fields.regionId);
      case 1: return stringField(&r.fields.regionCode);
      case 2: return stringField(&r.fields.regionName);
      case 3: return floatField(&r.fields.latitude);
      case 4: return floatField(&r.fields.longitude);
      case 5: return boolField(&r.fields.avoid);
      default: {
        Target t;
        t.into = Into::Nodes;
        t.nodes = &r.nodes;
        return t;
      }
    }
  }

  static Target nodeField(Node* n, int id) {
    switch (id) {
      case 0: return stringField(&n->name);
      case 1: return intField(&n->regionId);
      case 2: return stringField(&n->hostName);
      case 3: return stringField(&n->certName);
      case 4: return stringField(&n->ipv4);
      case 5: return stringField(&n->ipv6);
      case 6: return intField(&n->stunPort);
      case 7: return boolField(&n->stunOnly);
      case 8: return intField(&n->derpPort);
      case 9: return boolField(&n->insecureForTests);
      case 10: return stringField(&n->stunTestIp);
      default: return boolField(&n->canPort80);
    }
  }

  std::map<int, double>* scoresOf() { return &*map_.homeParams; }

  // The target of the value that starts now, consuming it.
  Target take() {
    if (stack_.empty()) {
      // The top-level value (strict parsing allows only one): an object, or
      // null, which decodes to nothing.
      Target t;
      if (!topSeen_) t.into = Into::Top;
      topSeen_ = true;
      return t;
    }
    Frame& f = stack_.back();
    if (f.kind == FrameKind::Nodes) {
      // Go: grow the slice when full, extend its length, then decode into
      // the element there (which may be left from an earlier "Nodes").
      GoNodes& ns = *f.nodes;
      const size_t i = f.index++;
      if (i >= ns.backing.size()) ns.backing.resize(i + 1);
      if (i >= ns.len) ns.len = i + 1;
      f.label = "[" + std::to_string(i) + "]";
      Target t;
      t.into = Into::Node;
      t.node = &ns.backing[i];
      return t;
    }
    Target t = f.next;
    f.next = Target{};
    return t;
  }

  bool countNumber() {
    const size_t n = numbers_++;
    if (nextOverflow_ < overflowed_.size() && overflowed_[nextOverflow_] == n) {
      ++nextOverflow_;
      return true;
    }
    return false;
  }

  bool overflowNumber(const Target& t) {
    if (t.into == Into::Int || t.into == Into::Float) return typeErrorAt("number out of range");
    if (t.into != Into::Skip) mismatch(t, "number");
    return true;
  }

  // The JSON path of the value being decoded: Regions.900.Nodes[1].DERPPort.
  std::string path() const {
    std::string p;
    for (const Frame& f : stack_) {
      if (f.label.empty()) continue;
      if (!p.empty() && f.label[0] != '[') p += '.';
      p += f.label;
    }
    return p;
  }

  void mismatch(const Target& t, std::string_view got) {
    if (t.into == Into::Top) {
      recordType("DERP map: want an object, got " + std::string(got));
      return;
    }
    const char* want = "";
    switch (t.into) {
      case Into::String: want = "a string"; break;
      case Into::Int:
      case Into::Float: want = "a number"; break;
      case Into::Bool: want = "a bool"; break;
      case Into::Nodes: want = "an array"; break;
      default: want = "an object"; break;
    }
    recordType(path() + ": want " + want + ", got " + std::string(got));
  }

  bool typeErrorAt(const std::string& what) {
    recordType(path() + ": " + what);
    return true;
  }

  void badKey(std::string_view k) {
    stack_.back().label.clear();  // the path names the map
    recordType(path() + ": key \"" + printable(k) + "\" is not a decimal integer (int32)");
  }

  // Go records the first type error and goes on to check the syntax.
  void recordType(std::string msg) {
    if (type_.empty()) type_ = std::move(msg);
  }

  bool push(Frame f) {
    if (stack_.size() >= size_t(kMaxDepth)) {
      return fail("JSON nesting deeper than " + std::to_string(kMaxDepth));
    }
    stack_.push_back(std::move(f));
    return true;
  }

  bool fail(std::string msg) {
    if (fatal_.empty()) fatal_ = std::move(msg);
    return false;
  }

  GoDerpMap map_;
  std::vector<Frame> stack_;
  bool topSeen_ = false;  // the top-level value has started
  std::vector<size_t> overflowed_;
  size_t nextOverflow_ = 0;
  size_t numbers_ = 0;
  std::string fatal_;
  std::string syntax_;
  std::string type_;
};

DerpMap toDerpMap(GoDerpMap&& g) {
  DerpMap m;
  if (g.homeParams) {
    m.hasHomeParams = true;
    m.regionScore = std::move(*g.homeParams);
  }
  m.omitDefaultRegions = g.omitDefaultRegions;
  for (auto& [id, gr] : g.regions) {
    Region& r = m.regions[id];
    r = std::move(gr.fields);
    gr.nodes.backing.resize(gr.nodes.len);
    r.nodes = std::move(gr.nodes.backing);
  }
  return m;
}

// ---------------------------------------------------------------------------
// Encoding

// Go's encoding/json float64: strconv 'f' with the shortest digits that
// round-trip, or 'e' below 1e-6 and from 1e21, with "e-07" cleaned to "e-7".
void appendGoFloat(std::string& out, double v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string_view s(buf, size_t(res.ptr - buf));  // [-]d[.ddd]e(+|-)dd[d]
  if (!s.empty() && s[0] == '-') {
    out += '-';
    s.remove_prefix(1);
  }
  const size_t e = s.find('e');
  std::string digits;
  for (char c : s.substr(0, e)) {
    if (c != '.') digits += c;
  }
  int exp = 0;
  std::string_view es = s.substr(e + 1);
  if (!es.empty() && es[0] == '+') es.remove_prefix(1);
  std::from_chars(es.data(), es.data() + es.size(), exp);

  const double a = std::fabs(v);
  if (a != 0 && (a < 1e-6 || a >= 1e21)) {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out.append(digits, 1);
    }
    out += 'e';
    out += exp < 0 ? '-' : '+';
    out += std::to_string(exp < 0 ? -exp : exp);
    return;
  }
  const long dp = long(exp) + 1;  // digits before the decimal point
  const long n = long(digits.size());
  if (dp <= 0) {
    out += "0.";
    out.append(size_t(-dp), '0');
    out += digits;
  } else if (dp >= n) {
    out += digits;
    out.append(size_t(dp - n), '0');
  } else {
    out.append(digits, 0, size_t(dp));
    out += '.';
    out.append(digits, size_t(dp));
  }
}

// Writes json.MarshalIndent(v, "", "  ") directly: members on their own
// lines, "key": value, empty objects and arrays as {} and [].
class IndentWriter {
 public:
  std::string& out() { return out_; }

  void open(char c) {
    out_ += c;
    hasItem_.push_back(false);
  }
  void close(char c) {
    const bool had = hasItem_.back();
    hasItem_.pop_back();
    if (had) newline();
    out_ += c;
  }
  void element() {
    if (hasItem_.back()) out_ += ',';
    hasItem_.back() = true;
    newline();
  }
  void key(std::string_view k) {
    element();
    appendGoJsonString(out_, k);
    out_ += ": ";
  }
  void str(std::string_view k, std::string_view v) {
    key(k);
    appendGoJsonString(out_, v);
  }
  void num(std::string_view k, int v) {
    key(k);
    out_ += std::to_string(v);
  }
  void real(std::string_view k, double v) {
    key(k);
    appendGoFloat(out_, v);
  }
  void flag(std::string_view k, bool v) {
    key(k);
    out_ += v ? "true" : "false";
  }

 private:
  void newline() {
    out_ += '\n';
    out_.append(2 * hasItem_.size(), ' ');
  }

  std::string out_;
  std::vector<bool> hasItem_;
};

// Go sorts map keys by their string form, so "10" comes before "9".
template <typename V>
std::vector<std::pair<std::string, const V*>> sortedKeys(const std::map<int, V>& m) {
  std::vector<std::pair<std::string, const V*>> keys;
  keys.reserve(m.size());
  for (const auto& [k, v] : m) keys.emplace_back(std::to_string(k), &v);
  std::sort(keys.begin(), keys.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return keys;
}

void writeNode(IndentWriter& w, const Node& n) {
  w.open('{');
  w.str("Name", n.name);
  w.num("RegionID", n.regionId);
  w.str("HostName", n.hostName);
  if (!n.certName.empty()) w.str("CertName", n.certName);
  if (!n.ipv4.empty()) w.str("IPv4", n.ipv4);
  if (!n.ipv6.empty()) w.str("IPv6", n.ipv6);
  if (n.stunPort != 0) w.num("STUNPort", n.stunPort);
  if (n.stunOnly) w.flag("STUNOnly", true);
  if (n.derpPort != 0) w.num("DERPPort", n.derpPort);
  if (n.insecureForTests) w.flag("InsecureForTests", true);
  if (!n.stunTestIp.empty()) w.str("STUNTestIP", n.stunTestIp);
  if (n.canPort80) w.flag("CanPort80", true);
  w.close('}');
}

void writeRegion(IndentWriter& w, const Region& r) {
  w.open('{');
  w.num("RegionID", r.regionId);
  w.str("RegionCode", r.regionCode);
  w.str("RegionName", r.regionName);
  if (r.latitude != 0) w.real("Latitude", r.latitude);
  if (r.longitude != 0) w.real("Longitude", r.longitude);
  if (r.avoid) w.flag("Avoid", true);
  w.key("Nodes");
  if (r.nodes.empty()) {
    w.out() += "null";  // a nil slice (see the header: empty and nil are one here)
  } else {
    w.open('[');
    for (const Node& n : r.nodes) {
      w.element();
      writeNode(w, n);
    }
    w.close(']');
  }
  w.close('}');
}

}  // namespace

std::optional<int> Node::effectiveStunPort() const {
  // netcheck: cmp.Or(STUNPort, 3478), and no STUN outside 0..65535
  // (derpprobe itself skips only -1).
  const int port = stunPort == 0 ? 3478 : stunPort;
  if (port < 0 || port > 65535) return std::nullopt;
  return port;
}

Result<DerpMap> parse(std::string_view json) {
  if (json.size() > kMaxMapBytes) {
    return makeError("DERP map too large: " + std::to_string(json.size()) + " bytes (max " +
                     std::to_string(kMaxMapBytes) + ")");
  }
  GoJsonNormalized norm;
  if (auto r = normalizeGoJson(json, norm); !r) return makeError("invalid JSON: " + r.error());
  const std::string_view text = norm.changed ? std::string_view(norm.text) : json;
  Handler handler(std::move(norm.overflowed));
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text.begin(), text.end(), &handler,
                                   nlohmann::json::input_format_t::json, /*strict=*/true,
                                   /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    return makeError(std::string("invalid JSON: ") + e.what());
  }
  if (!ok) {
    if (!handler.fatalError().empty()) return makeError(handler.fatalError());
    return makeError(handler.syntaxError().empty() ? "invalid JSON" : handler.syntaxError());
  }
  if (!handler.typeError().empty()) return makeError(handler.typeError());
  return toDerpMap(std::move(handler.result()));
}

std::string encodeIndented(const DerpMap& m) {
  IndentWriter w;
  w.open('{');
  if (m.hasHomeParams) {
    w.key("HomeParams");
    w.open('{');
    if (!m.regionScore.empty()) {
      w.key("RegionScore");
      w.open('{');
      for (const auto& [k, v] : sortedKeys(m.regionScore)) w.real(k, *v);
      w.close('}');
    }
    w.close('}');
  }
  w.key("Regions");
  if (m.regions.empty()) {
    w.out() += "null";  // a nil map (DerpMap{} in Go); {} would need a non-nil one
  } else {
    w.open('{');
    for (const auto& [k, r] : sortedKeys(m.regions)) {
      w.key(k);
      writeRegion(w, *r);
    }
    w.close('}');
  }
  if (m.omitDefaultRegions) w.flag("omitDefaultRegions", true);
  w.close('}');
  return std::move(w.out());
}

Result<void> validateForProbe(const DerpMap& m) {
  std::map<std::string_view, int> seen;  // node name -> region key
  for (const auto& [id, region] : m.regions) {
    for (const Node& n : region.nodes) {
      const auto [it, inserted] = seen.emplace(n.name, id);
      if (inserted) continue;
      std::string msg = "duplicate node name ";
      constexpr size_t kMaxName = 64;
      appendGoJsonString(msg, std::string_view(n.name).substr(0, kMaxName));
      if (n.name.size() > kMaxName) msg += "...";
      if (it->second == id) {
        msg += " in region " + std::to_string(id);
      } else {
        msg += " in regions " + std::to_string(it->second) + " and " + std::to_string(id);
      }
      return makeError(std::move(msg));
    }
  }
  return okResult();
}

}  // namespace derpd::derpmap
