#include "macos/test_fixtures.h"

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "macos/macho.h"

namespace tollgate::macos::testing {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "test fixture: %s\n", what.c_str());
  std::abort();
}

void PutBe32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  b[at] = static_cast<uint8_t>(v >> 24);
  b[at + 1] = static_cast<uint8_t>(v >> 16);
  b[at + 2] = static_cast<uint8_t>(v >> 8);
  b[at + 3] = static_cast<uint8_t>(v);
}

void PutLe32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  b[at] = static_cast<uint8_t>(v);
  b[at + 1] = static_cast<uint8_t>(v >> 8);
  b[at + 2] = static_cast<uint8_t>(v >> 16);
  b[at + 3] = static_cast<uint8_t>(v >> 24);
}

void AppendBe32(std::vector<uint8_t>& b, uint32_t v) {
  b.resize(b.size() + 4);
  PutBe32(b, b.size() - 4, v);
}

void AppendString(std::vector<uint8_t>& b, const std::string& s) {
  b.insert(b.end(), s.begin(), s.end());
  b.push_back(0);
}

void PadTo(std::vector<uint8_t>& b, size_t alignment) {
  while (b.size() % alignment != 0) b.push_back(0);
}

// A CodeDirectory of version 0x20200 (the first with a team ID) and no hash slots: the reader
// needs only the identifier and the team ID.
std::vector<uint8_t> CodeDirectory(const MachOSpec& spec) {
  std::vector<uint8_t> cd(52, 0);
  PutBe32(cd, 0, kCsMagicCodeDirectory);
  PutBe32(cd, 8, 0x20200);
  uint32_t ident_offset = 52;
  PutBe32(cd, 20, ident_offset);
  cd[36] = 32;  // hashSize (SHA-256)
  cd[37] = 2;   // hashType
  cd[39] = 12;  // pageSize 4096
  AppendString(cd, spec.identifier);
  if (spec.team_id) {
    PutBe32(cd, 48, static_cast<uint32_t>(cd.size()));
    AppendString(cd, *spec.team_id);
  }
  PadTo(cd, 4);
  PutBe32(cd, 16, static_cast<uint32_t>(cd.size()));  // hashOffset: no slots follow
  PutBe32(cd, 4, static_cast<uint32_t>(cd.size()));
  return cd;
}

std::vector<uint8_t> SuperBlob(const MachOSpec& spec) {
  struct Entry {
    uint32_t type;
    std::vector<uint8_t> blob;
  };
  std::vector<Entry> entries;
  entries.push_back({0, CodeDirectory(spec)});
  // An empty requirements set (slot 2), which the reader must skip.
  std::vector<uint8_t> requirements;
  AppendBe32(requirements, 0xfade0c01);
  AppendBe32(requirements, 12);
  AppendBe32(requirements, 0);
  entries.push_back({2, requirements});
  if (spec.entitlements_xml) {
    std::vector<uint8_t> ents;
    AppendBe32(ents, kCsMagicEmbeddedEntitlements);
    AppendBe32(ents, static_cast<uint32_t>(8 + spec.entitlements_xml->size()));
    ents.insert(ents.end(), spec.entitlements_xml->begin(), spec.entitlements_xml->end());
    entries.push_back({kCsSlotEntitlements, ents});
  }
  std::vector<uint8_t> sb;
  AppendBe32(sb, kCsMagicEmbeddedSignature);
  AppendBe32(sb, 0);  // length, below
  AppendBe32(sb, static_cast<uint32_t>(entries.size()));
  size_t index_at = sb.size();
  sb.resize(sb.size() + entries.size() * 8);
  for (size_t i = 0; i < entries.size(); ++i) {
    PutBe32(sb, index_at + i * 8, entries[i].type);
    PutBe32(sb, index_at + i * 8 + 4, static_cast<uint32_t>(sb.size()));
    sb.insert(sb.end(), entries[i].blob.begin(), entries[i].blob.end());
    PadTo(sb, 4);
  }
  PutBe32(sb, 4, static_cast<uint32_t>(sb.size()));
  return sb;
}

std::string Pem(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

std::vector<uint8_t> BuildThinMachO(const MachOSpec& spec) {
  auto put = [&](std::vector<uint8_t>& b, size_t at, uint32_t v) {
    spec.big_endian ? PutBe32(b, at, v) : PutLe32(b, at, v);
  };
  size_t header = spec.is64 ? 32 : 28;
  constexpr uint32_t kUuidCmdBytes = 24;
  constexpr uint32_t kSigCmdBytes = 16;
  uint32_t ncmds = spec.signed_ ? 2 : 1;
  uint32_t sizeofcmds = kUuidCmdBytes + (spec.signed_ ? kSigCmdBytes : 0);
  std::vector<uint8_t> b(header + sizeofcmds, 0);
  put(b, 0, spec.is64 ? kMachMagic64 : kMachMagic32);
  put(b, 4, spec.cpu_type);
  put(b, 8, 0);   // cpusubtype ALL
  put(b, 12, 2);  // MH_EXECUTE
  put(b, 16, ncmds);
  put(b, 20, sizeofcmds);
  put(b, header, 0x1b);  // LC_UUID, skipped by the reader
  put(b, header + 4, kUuidCmdBytes);
  for (size_t i = 0; i < 16; ++i) b[header + 8 + i] = static_cast<uint8_t>(i * 17);
  // Some "text" so the signature is not at the start of the file.
  b.resize(b.size() + 64, 0x90);
  PadTo(b, 16);
  if (spec.signed_) {
    std::vector<uint8_t> sig = SuperBlob(spec);
    size_t cmd = header + kUuidCmdBytes;
    put(b, cmd, kLcCodeSignature);
    put(b, cmd + 4, kSigCmdBytes);
    put(b, cmd + 8, static_cast<uint32_t>(b.size()));
    put(b, cmd + 12, static_cast<uint32_t>(sig.size()));
    b.insert(b.end(), sig.begin(), sig.end());
  }
  return b;
}

std::vector<uint8_t> BuildFatMachO(const std::vector<MachOSpec>& slices, bool fat64) {
  size_t arch_bytes = fat64 ? 32 : 20;
  std::vector<uint8_t> b(8 + slices.size() * arch_bytes, 0);
  PutBe32(b, 0, fat64 ? kFatMagic64 : kFatMagic);
  PutBe32(b, 4, static_cast<uint32_t>(slices.size()));
  for (size_t i = 0; i < slices.size(); ++i) {
    PadTo(b, 16);
    std::vector<uint8_t> thin = BuildThinMachO(slices[i]);
    size_t at = 8 + i * arch_bytes;
    PutBe32(b, at, slices[i].cpu_type);
    if (fat64) {
      PutBe32(b, at + 8, 0);
      PutBe32(b, at + 12, static_cast<uint32_t>(b.size()));
      PutBe32(b, at + 16, 0);
      PutBe32(b, at + 20, static_cast<uint32_t>(thin.size()));
      PutBe32(b, at + 24, 4);
    } else {
      PutBe32(b, at + 8, static_cast<uint32_t>(b.size()));
      PutBe32(b, at + 12, static_cast<uint32_t>(thin.size()));
      PutBe32(b, at + 16, 4);  // 2^4 alignment
    }
    b.insert(b.end(), thin.begin(), thin.end());
  }
  return b;
}

TestSigner MakeTestSigner(const std::string& common_name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) Die("EVP_EC_gen failed");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 365L * 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert, name);
  if (X509_sign(cert, key, EVP_sha256()) == 0) Die("X509_sign failed");
  TestSigner signer;
  BIO* cert_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cert_bio, cert);
  signer.cert_pem = Pem(cert_bio);
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  signer.key_pem = Pem(key_bio);
  BIO_free(key_bio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return signer;
}

std::vector<uint8_t> SignCms(const std::vector<uint8_t>& content, const TestSigner& signer) {
  BIO* cert_bio = BIO_new_mem_buf(signer.cert_pem.data(), static_cast<int>(signer.cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO* key_bio = BIO_new_mem_buf(signer.key_pem.data(), static_cast<int>(signer.key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO* in = BIO_new_mem_buf(content.data(), static_cast<int>(content.size()));
  CMS_ContentInfo* cms = CMS_sign(cert, key, nullptr, in, CMS_BINARY);
  if (cms == nullptr) Die("CMS_sign failed");
  unsigned char* der = nullptr;
  int n = i2d_CMS_ContentInfo(cms, &der);
  if (n <= 0) Die("i2d_CMS_ContentInfo failed");
  std::vector<uint8_t> out(der, der + n);
  OPENSSL_free(der);
  CMS_ContentInfo_free(cms);
  BIO_free(in);
  EVP_PKEY_free(key);
  BIO_free(key_bio);
  X509_free(cert);
  BIO_free(cert_bio);
  return out;
}

Plist BuildProfilePlist(const ProfileSpec& spec) {
  Plist p = Plist::Dict();
  p.Set("Name", Plist::Str(spec.name));
  p.Set("TeamIdentifier", Plist::StringArray({spec.team_id}));
  p.Set("ApplicationIdentifierPrefix", Plist::StringArray({spec.team_id}));
  p.Set("ExpirationDate", Plist::DateUnix(spec.expiration_unix));
  if (spec.developer_id) {
    p.Set("ProvisionsAllDevices", Plist::Bool(true));
  } else {
    p.Set("ProvisionedDevices", Plist::StringArray({"00000000-0000000000000000"}));
  }
  Plist ents = Plist::Dict();
  ents.Set("com.apple.application-identifier", Plist::Str(spec.app_id));
  ents.Set("com.apple.developer.team-identifier", Plist::Str(spec.team_id));
  ents.Set("com.apple.security.application-groups", Plist::StringArray(spec.app_groups));
  ents.Set("com.apple.developer.networking.networkextension",
           Plist::StringArray(spec.network_extension));
  ents.Set("com.apple.developer.system-extension.install", Plist::Bool(true));
  p.Set("Entitlements", std::move(ents));
  return p;
}

std::vector<uint8_t> BuildSignedProfile(const ProfileSpec& spec, const TestSigner& signer) {
  std::string xml = BuildProfilePlist(spec).ToXml();
  return SignCms(std::vector<uint8_t>(xml.begin(), xml.end()), signer);
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) Die("cannot write " + path);
}

void WriteFile(const std::string& path, const std::string& text) {
  WriteFile(path, std::vector<uint8_t>(text.begin(), text.end()));
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFakeBundle(const std::vector<ScaffoldFile>& scaffold, const std::string& app_dir,
                     const std::string& team_id,
                     const std::optional<std::vector<uint8_t>>& profile) {
  auto find = [&](std::string_view prefix) -> const ScaffoldFile& {
    for (const ScaffoldFile& f : scaffold) {
      if (f.relative_path.starts_with(prefix)) return f;
    }
    Die("scaffold has no " + std::string(prefix));
  };
  auto parse = [&](const ScaffoldFile& f) {
    auto p = ParsePlist(f.contents, f.relative_path);
    if (!p) Die(p.error().message);
    return std::move(*p);
  };
  std::string contents = app_dir + "/Contents";
  Plist app_info = parse(find("App/Info.plist"));
  Plist ext_info = parse(find("Extension/Info.plist"));
  std::string ext_id = ext_info["CFBundleIdentifier"].String().value_or("ext");
  std::string ext_contents =
      contents + "/Library/SystemExtensions/" + ext_id + ".systemextension/Contents";

  WriteFile(contents + "/Info.plist", app_info.ToBinary());  // binary, as Xcode may write it
  MachOSpec app_exe;
  app_exe.identifier = app_info["CFBundleIdentifier"].String().value_or("");
  app_exe.team_id = team_id;
  app_exe.entitlements_xml = find("App/App.entitlements").contents;
  WriteFile(contents + "/MacOS/" + app_info["CFBundleExecutable"].String().value_or("app"),
            BuildFatMachO({app_exe, [&] {
                             MachOSpec x = app_exe;
                             x.cpu_type = kCpuX86_64;
                             return x;
                           }()}));

  WriteFile(ext_contents + "/Info.plist", find("Extension/Info.plist").contents);
  MachOSpec ext_exe;
  ext_exe.identifier = ext_id;
  ext_exe.team_id = team_id;
  ext_exe.entitlements_xml = find("Extension/Extension.entitlements").contents;
  WriteFile(ext_contents + "/MacOS/" + ext_info["CFBundleExecutable"].String().value_or("ext"),
            BuildThinMachO(ext_exe));

  const ScaffoldFile& daemon = find("LaunchDaemons/");
  WriteFile(contents + "/Library/" + daemon.relative_path, daemon.contents);
  Plist daemon_plist = parse(daemon);
  MachOSpec daemon_exe;
  daemon_exe.identifier = daemon_plist["Label"].String().value_or("");
  daemon_exe.team_id = team_id;
  WriteFile(app_dir + "/" + daemon_plist["BundleProgram"].String().value_or("daemon"),
            BuildThinMachO(daemon_exe));

  if (profile) {
    WriteFile(contents + "/embedded.provisionprofile", *profile);
    WriteFile(ext_contents + "/embedded.provisionprofile", *profile);
  }
}

}  // namespace tollgate::macos::testing
