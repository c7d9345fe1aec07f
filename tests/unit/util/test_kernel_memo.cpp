// util/kernel_memo.hpp: timed kernel choices written down by one process and
// read back by the next, per build and CPU; never an error where the file
// cannot be used.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "test_helpers.hpp"
#include "util/cpu_info.hpp"
#include "util/kernel_memo.hpp"

namespace mithril::util {
namespace {

namespace fs = std::filesystem;

// MITHRIL_KERNEL_MEMO set for one test, restored after it.
class MemoEnv {
 public:
  explicit MemoEnv(const std::string& value) {
    if (const char* v = std::getenv("MITHRIL_KERNEL_MEMO")) m_old = v;
    ::setenv("MITHRIL_KERNEL_MEMO", value.c_str(), 1);
  }
  ~MemoEnv() {
    if (m_old)
      ::setenv("MITHRIL_KERNEL_MEMO", m_old->c_str(), 1);
    else
      ::unsetenv("MITHRIL_KERNEL_MEMO");
  }

 private:
  std::optional<std::string> m_old;
};

class KernelMemo : public ::testing::Test {
 protected:
  test::TempDir m_dir;
};

std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> v;
  std::ifstream in(p);
  for (std::string l; std::getline(in, l);)
    if (!l.empty() && l[0] != '#') v.push_back(l);
  return v;
}

TEST(BuildId, IsTheOneTheLinkerWrote) {
  const std::string id = build_id();
  ASSERT_EQ(id.size(), 40u) << id;  // --build-id=sha1 (CMakeLists.txt)
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  // binutils' own reading of this executable's notes (/proc/PID: in the
  // child, /proc/self would be readelf).
  const std::string cmd = "readelf -n /proc/" + std::to_string(::getpid()) + "/exe 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(cmd.c_str(), "r"), ::pclose);
  ASSERT_TRUE(p);
  std::string text;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p.get())) text.append(buf, n);
  ASSERT_NE(text.find("Build ID: "), std::string::npos) << "readelf is needed for this test:\n" << text;
  EXPECT_NE(text.find("Build ID: " + id), std::string::npos) << text;
}

TEST_F(KernelMemo, RemembersOneAnswerPerQuestion) {
  const fs::path file = m_dir.path() / "not" / "yet" / "kernels";  // its directories are created
  MemoEnv env(file.string());
  ASSERT_EQ(kernel_memo_path(), file);
  EXPECT_FALSE(recall_kernel("rans-decode avx2,avx2x"));
  // One timing is not trusted yet; a second that agrees is.
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));
  EXPECT_FALSE(recall_kernel("rans-decode avx2,avx2x"));
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));
  EXPECT_EQ(recall_kernel("rans-decode avx2,avx2x"), "avx2x");
  // Another question, and the same question answered anew: a different
  // answer starts over, and two more timings must agree on it.
  ASSERT_TRUE(remember_kernel("rans-encode avx2,avx2x", "avx2"));
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2"));
  EXPECT_FALSE(recall_kernel("rans-decode avx2,avx2x"));
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));
  EXPECT_FALSE(recall_kernel("rans-decode avx2,avx2x"));  // avx2, then avx2x: no two agree
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));
  EXPECT_EQ(recall_kernel("rans-decode avx2,avx2x"), "avx2x");
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));  // a third stays trusted
  EXPECT_EQ(recall_kernel("rans-decode avx2,avx2x"), "avx2x");
  EXPECT_FALSE(recall_kernel("rans-encode avx2,avx2x"));
  ASSERT_TRUE(remember_kernel("rans-encode avx2,avx2x", "avx2"));
  EXPECT_EQ(recall_kernel("rans-encode avx2,avx2x"), "avx2");
  EXPECT_FALSE(recall_kernel("rans-decode avx2"));  // other candidates: another question
  const auto lines = lines_of(file);
  ASSERT_EQ(lines.size(), 2u);
  // BUILD \t CPU \t QUESTION \t ANSWER \t TIMINGS
  EXPECT_EQ(lines[1].rfind(build_id() + "\t", 0), 0u) << lines[1];
  EXPECT_TRUE(lines[1].ends_with("\trans-encode avx2,avx2x\tavx2\t2")) << lines[1];
  // Nothing left beside it.
  for (const auto& e : fs::directory_iterator(file.parent_path())) EXPECT_EQ(e.path(), file);
}

TEST_F(KernelMemo, KeepsTheLast64Lines) {
  const fs::path file = m_dir / "kernels";
  MemoEnv env(file.string());
  for (int i = 0; i < 100; ++i)
    for (int twice = 0; twice < 2; ++twice) ASSERT_TRUE(remember_kernel("q" + std::to_string(i), "a" + std::to_string(i)));
  EXPECT_EQ(lines_of(file).size(), 64u);
  EXPECT_FALSE(recall_kernel("q35"));
  EXPECT_EQ(recall_kernel("q36"), "a36");
  EXPECT_EQ(recall_kernel("q99"), "a99");
}

TEST_F(KernelMemo, LinesOfOtherBuildsAndJunkAreNoAnswer) {
  const fs::path file = m_dir / "kernels";
  MemoEnv env(file.string());
  {
    std::ofstream out(file, std::ios::binary);
    out << "0000000000000000000000000000000000000000\tAuthenticAMD 25 17 1 AMD EPYC\trans-decode avx2,avx2x\tavx2\n"
        << "no tabs at all\n"
        << std::string("\0\xff\t\t\n", 5) << build_id() << "\n"
        << build_id() << "\tsome other CPU\trans-decode avx2,avx2x\tavx2\t2\n";
  }
  EXPECT_FALSE(recall_kernel("rans-decode avx2,avx2x"));
  // This build's line with no count of timings, a count that is no count,
  // or none to agree with: no answer.
  for (const char* tail : {"\tavx2x", "\tavx2x\t", "\tavx2x\t3", "\tavx2x\t22", "\t\t2", "\tavx2x\tx"}) {
    {
      std::ofstream out(file, std::ios::app);
      out << build_id() << '\t' << cpu_identity() << "\trans-decode avx2,avx2x" << tail << '\n';
    }
    EXPECT_FALSE(recall_kernel("rans-decode avx2,avx2x")) << tail;
  }
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));
  ASSERT_TRUE(remember_kernel("rans-decode avx2,avx2x", "avx2x"));
  EXPECT_EQ(recall_kernel("rans-decode avx2,avx2x"), "avx2x");
  EXPECT_EQ(lines_of(file).size(), 6u);  // the others' lines are kept
}

TEST_F(KernelMemo, AnOversizedFileIsNotRead) {
  const fs::path file = m_dir / "kernels";
  MemoEnv env(file.string());
  ASSERT_TRUE(remember_kernel("q", "a"));
  ASSERT_TRUE(remember_kernel("q", "a"));
  ASSERT_TRUE(recall_kernel("q"));
  {
    std::ofstream out(file, std::ios::app);
    out << std::string(70 * 1024, '#') << "\n";
  }
  EXPECT_FALSE(recall_kernel("q"));
  ASSERT_TRUE(remember_kernel("q", "b"));  // written anew, small again
  ASSERT_TRUE(remember_kernel("q", "b"));
  EXPECT_EQ(recall_kernel("q"), "b");
  EXPECT_LT(fs::file_size(file), 1024u);
}

TEST_F(KernelMemo, OffOrUnwritableIsNeverAnError) {
  for (const char* off : {"", "0", "off"}) {
    MemoEnv env(off);
    EXPECT_FALSE(kernel_memo_path()) << off;
    EXPECT_FALSE(remember_kernel("q", "a"));
    EXPECT_FALSE(recall_kernel("q"));
  }
  {
    MemoEnv env("/proc/no/such/dir/kernels");  // cannot be created
    EXPECT_FALSE(remember_kernel("q", "a"));
    EXPECT_FALSE(recall_kernel("q"));
  }
  {
    const fs::path dir = m_dir / "a_directory";  // the name is taken by a directory
    fs::create_directories(dir);
    MemoEnv env(dir.string());
    EXPECT_FALSE(remember_kernel("q", "a"));
    EXPECT_FALSE(recall_kernel("q"));
    EXPECT_TRUE(fs::is_directory(dir));
  }
}

}  // namespace
}  // namespace mithril::util
