#include "control/varlink.h"

#include <cstring>

namespace tollgate::control {

void MessageFramer::Append(std::string_view bytes) {
  // Compact before growing, so a long-lived connection does not keep every message it received.
  if (start_ > 0 && start_ == buffer_.size()) {
    buffer_.clear();
    start_ = 0;
  } else if (start_ > buffer_.size() / 2) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(bytes);
}

MessageFramer::Result MessageFramer::Next(std::string* message) {
  const size_t available = buffer_.size() - start_;
  const char* begin = buffer_.data() + start_;
  const void* nul = std::memchr(begin + scanned_, '\0', available - scanned_);
  if (nul == nullptr) {
    scanned_ = available;
    return available > max_ ? Result::kTooLarge : Result::kNone;
  }
  const size_t length = static_cast<const char*>(nul) - begin;
  if (length > max_) return Result::kTooLarge;
  message->assign(begin, length);
  start_ += length + 1;
  scanned_ = 0;
  return Result::kMessage;
}

namespace {

Reply Invalid(std::string message) {
  return Reply::Error(errors::kInvalidRequest, {{"message", std::move(message)}});
}

}  // namespace

std::optional<Call> ParseCall(std::string_view text, Reply* error) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    *error = Invalid("the request is not JSON: send one JSON object followed by a NUL byte");
    return std::nullopt;
  }
  if (!doc.is_object()) {
    *error = Invalid("the request must be a JSON object with \"method\"");
    return std::nullopt;
  }
  Call call;
  bool have_method = false;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& value = it.value();
    if (key == "method") {
      if (!value.is_string()) {
        *error = Invalid("\"method\" must be a string such as \"io.tollgate.Control.GetStatus\"");
        return std::nullopt;
      }
      call.method = value.get_ref<const std::string&>();
      have_method = true;
    } else if (key == "parameters") {
      if (value.is_null()) continue;
      if (!value.is_object()) {
        *error = Invalid("\"parameters\" must be a JSON object");
        return std::nullopt;
      }
      call.parameters = value;
    } else if (key == "more" || key == "oneway" || key == "upgrade") {
      if (value.is_null()) continue;
      if (!value.is_boolean()) {
        *error = Invalid("\"" + key + "\" must be true or false");
        return std::nullopt;
      }
      bool flag = value.get<bool>();
      if (key == "more") call.more = flag;
      if (key == "oneway") call.oneway = flag;
      if (key == "upgrade" && flag) {
        *error = Invalid("\"upgrade\" is not supported by tollgated");
        return std::nullopt;
      }
    } else {
      *error = Invalid("unknown request field \"" + key +
                       "\" (a call has method, parameters, more, oneway)");
      return std::nullopt;
    }
  }
  if (!have_method || call.method.empty()) {
    *error = Invalid("the request has no \"method\"");
    return std::nullopt;
  }
  if (call.more && call.oneway) {
    *error = Invalid("\"more\" and \"oneway\" exclude each other");
    return std::nullopt;
  }
  return call;
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string EncodeReply(const Reply& reply) {
  nlohmann::json out = nlohmann::json::object();
  if (!reply.error.empty()) out["error"] = reply.error;
  out["parameters"] = reply.parameters.is_object() ? reply.parameters : nlohmann::json::object();
  if (reply.continues) out["continues"] = true;
  std::string text = DumpJson(out);
  text.push_back('\0');
  return text;
}

}  // namespace tollgate::control
