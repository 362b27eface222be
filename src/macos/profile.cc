#include "macos/profile.h"

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <memory>

namespace tollgate::macos {
namespace {

struct CmsFree {
  void operator()(CMS_ContentInfo* p) const { CMS_ContentInfo_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct StoreFree {
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
};
using CmsPtr = std::unique_ptr<CMS_ContentInfo, CmsFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The first queued OpenSSL error as text (and the queue cleared, so it cannot leak into the
// next message).
std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  char buf[256] = "unknown OpenSSL error";
  if (code != 0) ERR_error_string_n(code, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

Expected<CmsPtr> DecodeCms(std::span<const uint8_t> der, const std::string& place) {
  if (der.size() > kMaxProfileBytes) {
    return Unexpected(ErrorCode::kTooLarge,
                      place + ": provisioning profile of " + std::to_string(der.size()) +
                          " bytes is over the limit of " + std::to_string(kMaxProfileBytes));
  }
  const unsigned char* p = der.data();
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
  if (!cms) {
    return Unexpected(ErrorCode::kMalformed,
                      place + ": not a DER-encoded CMS message (" + OpenSslError() +
                          "); a provisioning profile is the file Xcode or the developer portal "
                          "gives, not its decoded plist");
  }
  if (OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_pkcs7_signed) {
    return Unexpected(
        ErrorCode::kMalformed,
        place + ": CMS message is not SignedData, so it is not a provisioning profile");
  }
  return cms;
}

std::vector<uint8_t> ContentOf(CMS_ContentInfo* cms) {
  ASN1_OCTET_STRING** content = CMS_get0_content(cms);
  if (content == nullptr || *content == nullptr) return {};
  const unsigned char* data = ASN1_STRING_get0_data(*content);
  int length = ASN1_STRING_length(*content);
  if (data == nullptr || length <= 0) return {};
  return std::vector<uint8_t>(data, data + length);
}

// Verifies the signature with `cert_pem` as the only trust anchor. Any purpose is accepted:
// Apple's profile-signing leaf carries no S/MIME key usage, which OpenSSL would otherwise demand.
// The embedded content of a signed profile; an empty one is refused, because a profile carries
// its plist inside the signature.
Expected<std::vector<uint8_t>> SignedContent(CMS_ContentInfo* cms, const std::string& place) {
  std::vector<uint8_t> content = ContentOf(cms);
  if (content.empty()) {
    return Unexpected(ErrorCode::kMalformed,
                      place +
                          ": CMS message carries no content (a detached signature?); a "
                          "provisioning profile embeds its plist");
  }
  return content;
}

std::optional<std::string> Verify(CMS_ContentInfo* cms, const std::string& cert_pem,
                                  const std::string& place, bool& bad_cert) {
  BioPtr cert_bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  std::unique_ptr<X509, X509Free> cert(
      cert_bio ? PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) {
    bad_cert = true;
    return place + ": the trusted certificate is not a PEM X.509 certificate (" + OpenSslError() +
           ")";
  }
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  if (!store || X509_STORE_add_cert(store.get(), cert.get()) != 1) {
    bad_cert = true;
    return place + ": cannot use the trusted certificate (" + OpenSslError() + ")";
  }
  X509_STORE_set_purpose(store.get(), X509_PURPOSE_ANY);
  BioPtr out(BIO_new(BIO_s_mem()));
  if (CMS_verify(cms, nullptr, store.get(), nullptr, out.get(), CMS_BINARY) != 1) {
    return OpenSslError();
  }
  ERR_clear_error();
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ProvisioningProfile::ApplicationIdentifier() const {
  if (auto v = entitlements["com.apple.application-identifier"].String()) return v;
  return entitlements["application-identifier"].String();
}

std::vector<std::string> ProvisioningProfile::ApplicationGroups() const {
  return entitlements["com.apple.security.application-groups"].Strings();
}

Expected<std::vector<uint8_t>> ExtractProfileContent(std::span<const uint8_t> der,
                                                     std::string_view where) {
  std::string place(where);
  auto cms = DecodeCms(der, place);
  if (!cms) return Unexpected(cms.error());
  return SignedContent(cms->get(), place);
}

Expected<ProvisioningProfile> ReadProvisioningProfile(
    std::span<const uint8_t> der, std::string_view where,
    const std::optional<std::string>& trusted_cert_pem) {
  std::string place(where);
  auto cms = DecodeCms(der, place);
  if (!cms) return Unexpected(cms.error());
  auto content = SignedContent(cms->get(), place);
  if (!content) return Unexpected(content.error());
  auto plist = ParsePlist(*content, place + " (signed content)");
  if (!plist) return Unexpected(plist.error());
  if (plist->Ref().Type() != PLIST_DICT) {
    return Unexpected(ErrorCode::kMalformed,
                      place + ": the signed plist is not a dictionary, so not a profile");
  }
  ProvisioningProfile profile;
  const Plist& root = *plist;
  profile.name = root["Name"].String().value_or("");
  profile.team_ids = root["TeamIdentifier"].Strings();
  profile.app_id_prefixes = root["ApplicationIdentifierPrefix"].Strings();
  profile.expiration_unix = root["ExpirationDate"].DateUnix();
  profile.provisions_all_devices = root["ProvisionsAllDevices"].Bool().value_or(false);
  profile.provisioned_devices = root["ProvisionedDevices"].ArraySize();
  PlistRef ents = root["Entitlements"];
  if (ents.Type() == PLIST_DICT) profile.entitlements = Plist(plist_copy(ents.get()));

  if (trusted_cert_pem) {
    bool bad_cert = false;
    auto failure = Verify(cms->get(), *trusted_cert_pem, place, bad_cert);
    if (bad_cert) return Unexpected(ErrorCode::kInvalidArgument, *failure);
    profile.signature = failure ? SignatureCheck::kInvalid : SignatureCheck::kValid;
    if (failure) profile.signature_error = *failure;
  }
  return profile;
}

}  // namespace tollgate::macos
