#include "metrics.hpp"

#include <cstdio>

namespace derpd::worker {

const char* dropReasonName(DropReason r) {
  switch (r) {
    case DropReason::UnknownDest: return "unknown_dest";
    case DropReason::UnknownDestOnFwd: return "unknown_dest_on_fwd";
    case DropReason::GoneDisconnected: return "gone_disconnected";
    case DropReason::QueueHead: return "queue_head";
    case DropReason::QueueTail: return "queue_tail";
    case DropReason::WriteError: return "write_error";
    case DropReason::DupClient: return "dup_client";
    case DropReason::kCount: break;
  }
  return "unknown";
}

const char* closeReasonName(CloseReason r) {
  switch (r) {
    case CloseReason::HandshakeTimeout: return "handshake_timeout";
    case CloseReason::BadHandshake: return "bad_handshake";
    case CloseReason::BadFrame: return "bad_frame";
    case CloseReason::Eof: return "eof";
    case CloseReason::ReadError: return "read_error";
    case CloseReason::WriteError: return "write_error";
    case CloseReason::WriteTimeout: return "write_timeout";
    case CloseReason::ClosePeer: return "close_peer";
    case CloseReason::Rejected: return "rejected";
    case CloseReason::Http: return "http";
    case CloseReason::Shutdown: return "shutdown";
    case CloseReason::Evicted: return "evicted";
    case CloseReason::kCount: break;
  }
  return "unknown";
}

const char* acceptRejectName(AcceptReject r) {
  switch (r) {
    case AcceptReject::Rate: return "rate";
    case AcceptReject::Connections: return "connections";
    case AcceptReject::Handshakes: return "handshakes";
    case AcceptReject::kCount: break;
  }
  return "unknown";
}

const char* acceptErrorName(AcceptError e) {
  switch (e) {
    case AcceptError::Emfile: return "EMFILE";
    case AcceptError::Enfile: return "ENFILE";
    case AcceptError::Enobufs: return "ENOBUFS";
    case AcceptError::Enomem: return "ENOMEM";
    case AcceptError::Other: return "other";
    case AcceptError::kCount: break;
  }
  return "unknown";
}

static std::string fmtDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void VarzWriter::counter(const std::string& name, uint64_t v) {
  entries_[name] = "# TYPE " + name + " counter\n" + name + " " + std::to_string(v) + "\n";
}

void VarzWriter::gauge(const std::string& name, int64_t v) {
  entries_[name] = "# TYPE " + name + " gauge\n" + name + " " + std::to_string(v) + "\n";
}

void VarzWriter::untyped(const std::string& name, double v) { entries_[name] = name + " " + fmtDouble(v) + "\n"; }

void VarzWriter::labeledCounter(const std::string& name, const std::string& label,
                                const std::vector<std::pair<std::string, uint64_t>>& values) {
  std::string s = "# TYPE " + name + " counter\n";
  for (const auto& [k, v] : values) s += name + "{" + label + "=\"" + k + "\"} " + std::to_string(v) + "\n";
  entries_[name] = s;
}

void VarzWriter::labeledGauge(const std::string& name, const std::string& label,
                              const std::vector<std::pair<std::string, int64_t>>& values) {
  std::string s = "# TYPE " + name + " gauge\n";
  for (const auto& [k, v] : values) s += name + "{" + label + "=\"" + k + "\"} " + std::to_string(v) + "\n";
  entries_[name] = s;
}

void VarzWriter::peerMetrics(const std::vector<ipc::Metric>& metrics) {
  std::map<std::string, std::string> blocks;
  for (const ipc::Metric& m : metrics) {
    if (entries_.count(m.name)) continue;
    std::string& b = blocks[m.name];
    if (b.empty()) b = "# TYPE " + m.name + " " + std::string(ipc::metricTypeName(m.type)) + "\n";
    b += m.name + (m.labels.empty() ? "" : "{" + m.labels + "}") + " " + fmtDouble(m.value) + "\n";
  }
  for (auto& [name, block] : blocks) entries_[name] = std::move(block);
}

std::string VarzWriter::render() const {
  std::string out;
  for (const auto& [_, block] : entries_) out += block;
  return out;
}

}  // namespace derpd::worker
