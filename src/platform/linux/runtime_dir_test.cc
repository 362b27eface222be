#include "platform/linux/runtime_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace tollgate::platform {
namespace {

constexpr uid_t kNobody = 65534;

bool RequirePrivileged() {
  const char* v = std::getenv("TOLLGATE_REQUIRE_PRIVILEGED");
  return v != nullptr && std::string(v) == "1";
}

#define SKIP_UNLESS_ROOT(what)                                                                  \
  do {                                                                                          \
    if (::geteuid() != 0) {                                                                     \
      if (RequirePrivileged()) FAIL() << what << " needs root (TOLLGATE_REQUIRE_PRIVILEGED=1)"; \
      GTEST_SKIP() << what << " needs root";                                                    \
    }                                                                                           \
  } while (0)

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

struct stat Lstat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) st.st_mode = 0;
  return st;
}

class RuntimeDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/tollgate-rt-XXXXXX";
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    base_ = templ;
    dir_ = base_ + "/run";
    gid_ = ::getegid();
  }
  void TearDown() override {
    if (!base_.empty()) std::system(("rm -rf '" + base_ + "'").c_str());
  }

  std::string base_;
  std::string dir_;
  gid_t gid_ = 0;
};

TEST_F(RuntimeDirTest, CreatesDirectoryOwnedByUsAndGroup) {
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_TRUE(rd) << rd.error().message;
  EXPECT_TRUE(rd->created);
  EXPECT_TRUE(rd->fd.valid());
  struct stat st = Lstat(dir_);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_gid, gid_);
}

TEST_F(RuntimeDirTest, UmaskDoesNotChangeModes) {
  mode_t old = ::umask(077);
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  Expected<UniqueFd> sock =
      rd ? BindServiceSocket(*rd, "analysis.sock", SOCK_SEQPACKET, gid_) : Unexpected(rd.error());
  ::umask(old);
  ASSERT_TRUE(sock) << sock.error().message;
  EXPECT_EQ(Lstat(dir_).st_mode & 07777, 0751u);
  EXPECT_EQ(Lstat(dir_ + "/analysis.sock").st_mode & 07777, 0660u);
}

TEST_F(RuntimeDirTest, AcceptsOwnExistingDirectory) {
  ASSERT_TRUE(PrepareRuntimeDir(dir_, gid_));
  Expected<RuntimeDir> again = PrepareRuntimeDir(dir_, gid_);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_FALSE(again->created);
}

TEST_F(RuntimeDirTest, FixesModeOfOwnDirectory) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir_.c_str(), 02775), 0);  // group-writable, setgid: ours, so corrected
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_TRUE(rd) << rd.error().message;
  EXPECT_FALSE(rd->created);
  EXPECT_EQ(Lstat(dir_).st_mode & 07777, 0751u);
}

TEST_F(RuntimeDirTest, FixesGroupOfOwnDirectory) {
  SKIP_UNLESS_ROOT("giving a directory to a foreign group");
  ASSERT_EQ(::mkdir(dir_.c_str(), 0750), 0);
  ASSERT_EQ(::chown(dir_.c_str(), static_cast<uid_t>(-1), kNobody), 0);
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_TRUE(rd) << rd.error().message;
  EXPECT_EQ(Lstat(dir_).st_gid, gid_);
}

TEST_F(RuntimeDirTest, GivesDirectoryAndSocketToAnotherGroupAsRoot) {
  SKIP_UNLESS_ROOT("giving files to a foreign group");
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, kNobody);
  ASSERT_TRUE(rd) << rd.error().message;
  EXPECT_EQ(Lstat(dir_).st_gid, kNobody);
  Expected<UniqueFd> sock = BindServiceSocket(*rd, "analysis.sock", SOCK_SEQPACKET, kNobody);
  ASSERT_TRUE(sock) << sock.error().message;
  struct stat st = Lstat(dir_ + "/analysis.sock");
  EXPECT_EQ(st.st_gid, kNobody);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST_F(RuntimeDirTest, RefusesSymlink) {
  std::string target = base_ + "/elsewhere";
  ASSERT_EQ(::mkdir(target.c_str(), 0750), 0);
  ASSERT_EQ(::symlink(target.c_str(), dir_.c_str()), 0);
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_FALSE(rd);
  EXPECT_EQ(rd.error().message, "runtime directory " + dir_ +
                                    " is a symlink; refusing. Remove it; tollgated creates the "
                                    "directory itself");
  EXPECT_TRUE(S_ISLNK(Lstat(dir_).st_mode));
}

TEST_F(RuntimeDirTest, RefusesNonDirectory) {
  int fd = ::open(dir_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_FALSE(rd);
  EXPECT_TRUE(Contains(rd.error().message, "is not a directory")) << rd.error().message;
}

TEST_F(RuntimeDirTest, RefusesDirectoryWritableByOthers) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_FALSE(rd);
  EXPECT_EQ(rd.error().code, ErrorCode::kPermissionDenied);
  EXPECT_TRUE(Contains(rd.error().message, dir_ + " is writable by others (mode 0777)"))
      << rd.error().message;
  EXPECT_EQ(Lstat(dir_).st_mode & 07777, 0777u) << "a refused directory must not be modified";
}

TEST_F(RuntimeDirTest, RefusesForeignOwner) {
  SKIP_UNLESS_ROOT("chown to uid 65534");
  ASSERT_EQ(::mkdir(dir_.c_str(), 0750), 0);
  ASSERT_EQ(::chown(dir_.c_str(), kNobody, gid_), 0);
  Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
  ASSERT_FALSE(rd);
  EXPECT_TRUE(Contains(rd.error().message, "owned by uid 65534, not by us (uid 0); refusing"))
      << rd.error().message;
  EXPECT_EQ(Lstat(dir_).st_uid, kNobody);
}

TEST_F(RuntimeDirTest, RefusesRelativePathAndReportsMissingParent) {
  Expected<RuntimeDir> rel = PrepareRuntimeDir("run/tollgate", gid_);
  ASSERT_FALSE(rel);
  EXPECT_EQ(rel.error().code, ErrorCode::kInvalidArgument);
  Expected<RuntimeDir> orphan = PrepareRuntimeDir(base_ + "/missing/run", gid_);
  ASSERT_FALSE(orphan);
  EXPECT_TRUE(Contains(orphan.error().message, base_ + "/missing/run"));
  EXPECT_TRUE(Contains(orphan.error().message, "parent directory does not exist"))
      << orphan.error().message;
}

class RuntimeDirSocketTest : public RuntimeDirTest {
 protected:
  void SetUp() override {
    RuntimeDirTest::SetUp();
    Expected<RuntimeDir> rd = PrepareRuntimeDir(dir_, gid_);
    ASSERT_TRUE(rd) << rd.error().message;
    rd_ = std::move(*rd);
  }

  // Connects through the public path, the way a client would.
  int ConnectErrno(const std::string& name, int type) {
    int s = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = dir_ + "/" + name;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int rc = ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    int err = rc == 0 ? 0 : errno;
    ::close(s);
    return err;
  }

  RuntimeDir rd_;
};

TEST_F(RuntimeDirSocketTest, BindsListeningSocketsWithModeAndGroup) {
  for (int type : {SOCK_SEQPACKET, SOCK_STREAM}) {
    const std::string name = type == SOCK_SEQPACKET ? "analysis.sock" : "control.sock";
    SCOPED_TRACE(name);
    Expected<UniqueFd> sock = BindServiceSocket(rd_, name, type, gid_);
    ASSERT_TRUE(sock) << sock.error().message;
    struct stat st = Lstat(dir_ + "/" + name);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(st.st_uid, ::geteuid());
    EXPECT_EQ(st.st_gid, gid_);

    int got_type = 0, listening = 0;
    socklen_t len = sizeof(int);
    ASSERT_EQ(::getsockopt(sock->get(), SOL_SOCKET, SO_TYPE, &got_type, &len), 0);
    len = sizeof(int);
    ASSERT_EQ(::getsockopt(sock->get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len), 0);
    EXPECT_EQ(got_type, type);
    EXPECT_EQ(listening, 1);
    EXPECT_TRUE(::fcntl(sock->get(), F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(sock->get(), F_GETFD) & FD_CLOEXEC);
    EXPECT_EQ(ConnectErrno(name, type), 0);
  }
}

TEST_F(RuntimeDirSocketTest, ReplacesStaleSocket) {
  {
    Expected<UniqueFd> first = BindServiceSocket(rd_, "analysis.sock", SOCK_SEQPACKET, gid_);
    ASSERT_TRUE(first) << first.error().message;
  }  // closed: the file stays behind with nobody listening, as after a crash
  ASSERT_TRUE(S_ISSOCK(Lstat(dir_ + "/analysis.sock").st_mode));
  ASSERT_EQ(ConnectErrno("analysis.sock", SOCK_SEQPACKET), ECONNREFUSED);
  Expected<UniqueFd> second = BindServiceSocket(rd_, "analysis.sock", SOCK_SEQPACKET, gid_);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(ConnectErrno("analysis.sock", SOCK_SEQPACKET), 0);
}

TEST_F(RuntimeDirSocketTest, RefusesSocketSomeoneListensOn) {
  Expected<UniqueFd> first = BindServiceSocket(rd_, "analysis.sock", SOCK_SEQPACKET, gid_);
  ASSERT_TRUE(first) << first.error().message;
  for (int type : {SOCK_SEQPACKET, SOCK_STREAM}) {
    Expected<UniqueFd> second = BindServiceSocket(rd_, "analysis.sock", type, gid_);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
    EXPECT_TRUE(Contains(second.error().message,
                         "another process is listening on " + dir_ + "/analysis.sock"))
        << second.error().message;
  }
  EXPECT_EQ(ConnectErrno("analysis.sock", SOCK_SEQPACKET), 0) << "the live socket was disturbed";
}

TEST_F(RuntimeDirSocketTest, RefusesToRemoveNonSocket) {
  const std::string path = dir_ + "/analysis.sock";
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  Expected<UniqueFd> sock = BindServiceSocket(rd_, "analysis.sock", SOCK_SEQPACKET, gid_);
  ASSERT_FALSE(sock);
  EXPECT_EQ(sock.error().message, path +
                                      " exists and is not a socket; refusing to remove it. Remove "
                                      "it by hand if it is not needed");
  EXPECT_TRUE(S_ISREG(Lstat(path).st_mode));
}

TEST_F(RuntimeDirSocketTest, RefusesToFollowSymlinkAtSocketPath) {
  const std::string victim = base_ + "/victim";
  int fd = ::open(victim.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ASSERT_EQ(::symlink(victim.c_str(), (dir_ + "/analysis.sock").c_str()), 0);
  Expected<UniqueFd> sock = BindServiceSocket(rd_, "analysis.sock", SOCK_SEQPACKET, gid_);
  ASSERT_FALSE(sock);
  EXPECT_TRUE(Contains(sock.error().message, "is not a socket")) << sock.error().message;
  EXPECT_TRUE(S_ISLNK(Lstat(dir_ + "/analysis.sock").st_mode));
  EXPECT_TRUE(S_ISREG(Lstat(victim).st_mode));
}

TEST_F(RuntimeDirSocketTest, RejectsNamesOutsideTheDirectoryAndOtherTypes) {
  for (const char* name : {"", ".", "..", "../escape.sock", "a/b.sock"}) {
    Expected<UniqueFd> sock = BindServiceSocket(rd_, name, SOCK_SEQPACKET, gid_);
    ASSERT_FALSE(sock) << name;
    EXPECT_EQ(sock.error().code, ErrorCode::kInvalidArgument);
  }
  Expected<UniqueFd> dgram = BindServiceSocket(rd_, "x.sock", SOCK_DGRAM, gid_);
  ASSERT_FALSE(dgram);
  EXPECT_EQ(dgram.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Lstat(base_ + "/escape.sock").st_mode, 0u);
}

// The socket lands in the directory that was verified even if the path is swapped afterwards.
TEST_F(RuntimeDirSocketTest, BindsIntoVerifiedDirectoryAfterPathSwap) {
  const std::string moved = base_ + "/moved";
  ASSERT_EQ(::rename(dir_.c_str(), moved.c_str()), 0);
  ASSERT_EQ(::mkdir(dir_.c_str(), 0777), 0);  // an impostor at the old path
  Expected<UniqueFd> sock = BindServiceSocket(rd_, "analysis.sock", SOCK_SEQPACKET, gid_);
  ASSERT_TRUE(sock) << sock.error().message;
  EXPECT_TRUE(S_ISSOCK(Lstat(moved + "/analysis.sock").st_mode));
  EXPECT_EQ(Lstat(dir_ + "/analysis.sock").st_mode, 0u);
}

}  // namespace
}  // namespace tollgate::platform
