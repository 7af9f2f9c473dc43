// Reading Hugging Face config.json values with errors that name the file and key, shared by the
// Mixtral-layout config (config.cc) and the architecture files (moe/model/arch/).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "moe/core/error.h"
#include "moe/kernels/rope.h"

namespace moe::model {

class HfJson {
 public:
  HfJson(const nlohmann::json& j, std::string origin) : j_(j), origin_(std::move(origin)) {
    MOE_CHECK(j_.is_object(), "config", "{}: expected a JSON object", origin_);
  }
  const std::string& origin() const { return origin_; }
  const nlohmann::json& json() const { return j_; }
  // Present and not null.
  bool Has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  template <typename T>
  T Get(const char* key) const {
    MOE_CHECK(j_.contains(key), "config", "{}: missing key '{}'", origin_, key);
    try {
      return j_.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      Fail("config", "{}: key '{}' has the wrong type ({})", origin_, key, j_.at(key).dump());
    }
  }
  template <typename T>
  T GetOr(const char* key, T fallback) const {
    if (!Has(key)) return fallback;
    return Get<T>(key);
  }
  // Error "<origin>: <key> = <value> is not supported (<why>)".
  [[noreturn]] void Unsupported(const char* key, const std::string& why) const {
    Fail("config", "{}: {} = {} is not supported ({})", origin_, key,
         j_.contains(key) ? j_.at(key).dump() : "?", why);
  }

 private:
  const nlohmann::json& j_;
  std::string origin_;
};

// The `rope_scaling` object (null/absent = none): "type" or "rope_type" of none/default, linear,
// yarn, llama3 with their parameters; unknown kinds are Errors naming the file.
kernels::RopeScaling ParseRopeScaling(const HfJson& j);
nlohmann::json RopeScalingToJson(const kernels::RopeScaling& s);

}  // namespace moe::model
