#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "mithril/error.hpp"
#include "test_helpers.hpp"
#include "util/mapped_file.hpp"

namespace mithril::util {
namespace {

std::size_t page_bytes() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

// Three pages of 0xAB.
std::filesystem::path three_pages(const test::TempDir& dir) {
  const auto path = dir / "three-pages";
  test::write_file(path, ByteVector(3 * page_bytes(), std::byte{0xAB}));
  return path;
}

// A byte read through a volatile pointer: the load happens here.
std::byte read_byte(const std::byte* p) { return *static_cast<const volatile std::byte*>(p); }

TEST(MappedFile, ReadsPastAShrunkEndFindZerosAndTheFileIsRefused) {
  install_bus_error_recovery();
  const test::TempDir dir;
  const auto path = three_pages(dir);
  const MappedFile file(path);
  EXPECT_FALSE(file.shrank());
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(page_bytes())), 0);
  // The first page is still the file's; the last lies past its new end.
  EXPECT_EQ(read_byte(file.bytes().data()), std::byte{0xAB});
  EXPECT_FALSE(file.shrank());
  EXPECT_EQ(read_byte(file.bytes().data() + 2 * page_bytes() + 5), std::byte{0});
  EXPECT_EQ(read_byte(file.bytes().data() + 3 * page_bytes() - 1), std::byte{0});  // the patched page again
  EXPECT_TRUE(file.shrank());
  try {
    file.check_intact();
    ADD_FAILURE() << "check_intact() did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::io);
    EXPECT_EQ(std::string(e.what()),
              path.string() + ": shrank while it was being read (truncated or rewritten by another process?)");
  }
  // Before committing, the same cause is given (not "changed while ...").
  try {
    file.check_unchanged("compressed");
    ADD_FAILURE() << "check_unchanged() did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::io);
    EXPECT_NE(std::string(e.what()).find(": shrank while it was being read"), std::string::npos) << e.what();
  }
}

TEST(MappedFile, AnUntouchedOrWholeFileIsIntact) {
  install_bus_error_recovery();
  install_bus_error_recovery();  // once per process: a second call changes nothing
  const test::TempDir dir;
  const auto path = three_pages(dir);
  const MappedFile file(path);
  for (std::size_t i = 0; i < file.size(); i += page_bytes()) EXPECT_EQ(read_byte(file.bytes().data() + i), std::byte{0xAB});
  EXPECT_FALSE(file.shrank());
  EXPECT_NO_THROW(file.check_intact());
  EXPECT_NO_THROW(file.check_unchanged("read"));
  // A file shrunk where nothing reads it: nothing was given in its place.
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(page_bytes())), 0);
  EXPECT_FALSE(file.shrank());
  EXPECT_NO_THROW(file.check_intact());
  try {  // its size moved
    file.check_unchanged("read");
    ADD_FAILURE() << "check_unchanged() did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::io);
    EXPECT_EQ(std::string(e.what()),
              path.string() + ": changed while it was being read (written by another process?); nothing written");
  }
}

TEST(MappedFile, EveryOneOfManyOpenFilesIsWatched) {
  install_bus_error_recovery();
  const test::TempDir dir;
  std::vector<MappedFile> files;
  for (int i = 0; i < 200; ++i) {
    const auto path = dir / ("f" + std::to_string(i));
    test::write_file(path, ByteVector(2 * page_bytes(), std::byte{0xCD}));
    files.emplace_back(path);
  }
  const auto& last = files.back();
  ASSERT_EQ(::truncate(last.path().c_str(), 0), 0);
  EXPECT_EQ(read_byte(last.bytes().data() + page_bytes()), std::byte{0});
  EXPECT_TRUE(last.shrank());
  EXPECT_FALSE(files.front().shrank());
  EXPECT_EQ(test::code_of([&] { last.check_intact(); }), Errc::io);
}

// Dead of SIGBUS, or (under a sanitizer, whose handler takes it over and
// reports it) aborted or exited with a failure: the process did not go on.
bool died_of_bus_error(int status) {
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT;
  return WIFEXITED(status) && WEXITSTATUS(status) != 0;
}

TEST(MappedFileDeathTest, AnyOtherBusErrorStillEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  install_bus_error_recovery();
  // A signal sent, not a fault: passed on to the default action.
  EXPECT_EXIT(::raise(SIGBUS), died_of_bus_error, "");
  // A fault in a mapping that is not a MappedFile's: passed on too.
  const test::TempDir dir;
  const auto path = three_pages(dir);
  EXPECT_EXIT(
      {
        const int fd = ::open(path.c_str(), O_RDONLY);
        void* p = ::mmap(nullptr, 3 * page_bytes(), PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED || ::ftruncate(::open(path.c_str(), O_WRONLY), 0) != 0) ::_exit(0);
        (void)read_byte(static_cast<const std::byte*>(p) + 2 * page_bytes());
        ::_exit(0);
      },
      died_of_bus_error, "");
}

}  // namespace
}  // namespace mithril::util
