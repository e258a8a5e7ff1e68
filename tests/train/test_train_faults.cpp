// Faults during training, through the `ssm train` binary: SIGKILL at random moments (in a step, while a
// checkpoint is written or removed) 20 times in a row, each run resumed with --resume; a full disk and
// an unwritable output folder while a checkpoint is saved; SIGINT / SIGTERM. After each, every
// checkpoint in the folder is complete, and the resumed run ends with the uninterrupted run's weights,
// AdamW moments, trainer state and metrics, bit for bit.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "core/file_util.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "model/language_model.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/train_process.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;
using test::ChildSetup;
using test::FolderEvents;
using test::SsmProcess;

const std::string kExcerpt = std::string(SSM_TEST_DATA_DIR) + "/corpus/excerpt.txt";
const Json kTinyMamba = {{"model_type", "mamba"}, {"hidden_size", 32}, {"num_hidden_layers", 2}, {"vocab_size", 256},
                         {"state_size", 8},       {"expand", 2},       {"conv_kernel", 4}};

std::vector<std::string> lines(const std::string& file) {
  std::vector<std::string> out;
  if (!fs::exists(file)) return out;
  std::istringstream in(read_text_file(file));
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The regular files of a folder: name → bytes.
std::map<std::string, std::string> folder_files(const std::string& folder) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(folder))
    if (e.is_regular_file()) files[e.path().filename().string()] = read_text_file(e.path().string());
  return files;
}

void expect_same_files(const std::string& folder, const std::string& reference) {
  const auto a = folder_files(folder), b = folder_files(reference);
  ASSERT_EQ(a.size(), b.size()) << folder << " vs " << reference;
  for (const auto& [name, bytes] : b) {
    ASSERT_TRUE(a.count(name)) << folder << " lacks " << name;
    EXPECT_TRUE(a.at(name) == bytes) << folder << "/" << name << " differs from " << reference;
  }
}

std::vector<std::string> checkpoints(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// What an interrupted writer leaves: unfinished or half-removed checkpoint folders, temporary files.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name[0] == '.' && name.find(".tmp-") != std::string::npos) names.push_back(name);
    if (name.rfind(".old-", 0) == 0) names.push_back(name);
  }
  return names;
}

// Loads like `ssm generate` and --resume do: weights, AdamW moments, trainer state, tokenizer.
void expect_loadable_checkpoint(const std::string& folder) {
  SCOPED_TRACE(folder);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "optimizer.safetensors", "trainer_state.json"})
    ASSERT_TRUE(fs::exists(fs::path(folder) / f)) << f;
  ASSERT_NO_THROW({
    LanguageModel::load(folder);
    const SafetensorsFile optimizer = SafetensorsFile::open(folder + "/optimizer.safetensors");
    EXPECT_FALSE(optimizer.names().empty());
    for (const auto& name : optimizer.names()) optimizer.get(name);
    EXPECT_EQ(fmt::format("checkpoint-{:08d}", read_trainer_state(folder).step), fs::path(folder).filename().string());
    load_tokenizer(folder);
  });
}

// The output has exactly one error line, holding each fragment, and no sign of a crash.
void expect_one_error(const std::string& output, const std::vector<std::string>& fragments) {
  std::vector<std::string> errors;
  std::istringstream in(output);
  for (std::string l; std::getline(in, l);)
    if (l.rfind("error: ", 0) == 0) errors.push_back(l);
  ASSERT_EQ(errors.size(), 1u) << output;
  for (const std::string& f : fragments) EXPECT_NE(errors[0].find(f), std::string::npos) << f << "\n" << errors[0];
  for (const char* crash : {"terminate", "Aborted", "Segmentation", "core dumped", "Assertion"})
    EXPECT_EQ(output.find(crash), std::string::npos) << output;
}

class TrainFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ssm_faults_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_text_file(path("config.json"), kTinyMamba.dump());
  }
  void TearDown() override {
    std::error_code ignored;  // a failed test may have left the folder read-only
    fs::permissions(path("run"), fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(dir_, ignored);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // `ssm train` of the tiny model into `out`, on one thread (bit-identical runs need one thread count).
  std::vector<std::string> train_args(const std::string& out, int steps, std::vector<std::string> extra) const {
    std::vector<std::string> a = {"train",   "--model-config", path("config.json"),  "--data", kExcerpt, "--out",
                                  path(out), "--steps",        std::to_string(steps)};
    std::istringstream fixed(
        "--seed 7 --batch-size 4 --seq-len 32 --lr 3e-3 --warmup 2 --decay-steps 300 --eval-tokens 256 "
        "--threads 1 --progress 0 --quiet");
    for (std::string flag; fixed >> flag;) a.push_back(flag);
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // Runs to the end; returns the output.
  std::string run(const std::string& out, int steps, const std::vector<std::string>& extra, ChildSetup setup = {}) {
    SsmProcess p(train_args(out, steps, extra), path(out + ".log"), setup);
    EXPECT_EQ(p.exit_code(), 0) << p.output();
    return p.output();
  }
  // A run that ended like the uninterrupted one: final model, metrics, loss curve and last checkpoint.
  void expect_same_final(const std::string& out, const std::string& reference, int steps) {
    for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "loss.png"})
      EXPECT_TRUE(read_text_file(path(out) + "/" + f) == read_text_file(path(reference) + "/" + f)) << f;
    const std::string last = fmt::format("/checkpoint-{:08d}", steps);
    expect_same_files(path(out) + last, path(reference) + last);
    EXPECT_EQ(leftovers(path(out)), std::vector<std::string>{});
  }
  fs::path dir_;
};

// Times from an uninterrupted run's folder events, which scale the kill delays to this machine.
struct CheckpointTimes {
  double first_complete = 0;  // from the start to the first complete checkpoint
  double write = 0;           // a checkpoint write: its folder created → renamed into place
  double between = 0;         // a checkpoint complete → the next one started (the steps between)
};

CheckpointTimes checkpoint_times(const FolderEvents& events, test::Clock::time_point start) {
  std::vector<test::Clock::time_point> begun, done;
  for (const auto& e : events.events()) {
    if (e.name.rfind(".tmp-checkpoint-", 0) == 0) begun.push_back(e.time);
    if (e.name.rfind("checkpoint-", 0) == 0) done.push_back(e.time);
  }
  auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
  CheckpointTimes t;
  if (done.empty() || begun.size() != done.size()) return t;
  t.first_complete = seconds(done[0] - start);
  for (size_t i = 0; i < done.size(); ++i) t.write += seconds(done[i] - begun[i]) / double(done.size());
  for (size_t i = 0; i + 1 < done.size(); ++i) t.between += seconds(begun[i + 1] - done[i]) / double(done.size() - 1);
  return t;
}

TEST_F(TrainFaults, SurvivesTwentyKillsAtRandomMoments) {
  const int steps = 48;
  const std::vector<std::string> cadence = {"--checkpoint-every", "2", "--eval-every", "10"};
  // The uninterrupted run, every checkpoint kept.
  fs::create_directories(path("ref"));
  FolderEvents ref_events(path("ref"));
  std::vector<std::string> keep_all = cadence;
  keep_all.insert(keep_all.end(), {"--keep-checkpoints", "1000"});
  SsmProcess ref(train_args("ref", steps, keep_all), path("ref.log"));
  ref_events.follow(ref);
  ASSERT_EQ(ref.exit_code(), 0) << ref.output();
  const CheckpointTimes times = checkpoint_times(ref_events, ref.started());
  ASSERT_GT(times.write, 0);
  const std::vector<std::string> ref_metrics = lines(path("ref/metrics.jsonl"));
  ASSERT_EQ(ref_metrics.size(), size_t(steps));

  // 20 runs, each killed: while a checkpoint is written (the 1st or 2nd of the run, after a random part of
  // a write's time), between checkpoints (in the steps after one), or anywhere from the start on (loading,
  // the cleanup of what the last kill left, the first steps and write). Delays from a seeded generator.
  std::mt19937_64 rng(12);
  auto uniform = [&](double hi) { return std::uniform_real_distribution<double>(0, hi)(rng); };
  const std::string out = path("run");
  fs::create_directories(out);
  std::optional<std::string> resume_point;  // the latest complete checkpoint after the last kill
  int torn_checkpoints = 0, torn_removals = 0, torn_files = 0, resumes_seen = 0;
  std::set<std::string> left_before;
  for (int trial = 0; trial < 20; ++trial) {
    SCOPED_TRACE("kill " + std::to_string(trial + 1));
    std::vector<std::string> extra = cadence;
    if (trial > 0) extra.push_back("--resume");
    FolderEvents events(out);
    SsmProcess p(train_args("run", steps, extra), path("run.log"));
    const int kind = trial % 3, nth = 1 + int(rng() % 2);
    if (kind == 0 && events.wait_for(".tmp-checkpoint-", nth, p)) test::sleep_seconds(uniform(times.write));
    if (kind == 1 && events.wait_for("checkpoint-", nth, p)) test::sleep_seconds(uniform(times.between));
    // Anywhere from the start, but no later than this run's first checkpoint write begins (load
    // varies between this run and the reference's, and a run must not end before its kill).
    if (kind == 2) events.wait_for(".tmp-checkpoint-", 1, p, uniform(times.first_complete));
    p.signal(SIGKILL);
    ASSERT_TRUE(p.killed_by(SIGKILL)) << "the run ended before it was killed:\n" << p.output();

    // It resumed from the checkpoint the last kill left (kills in the first two kinds come after that line).
    const std::string output = p.output();
    if (trial > 0 && (kind < 2 || output.find("resuming from") != std::string::npos ||
                      output.find("no checkpoint in") != std::string::npos)) {
      const std::string expected = resume_point ? fmt::format("resuming from {} (step", *resume_point)
                                                : fmt::format("no checkpoint in '{}'", out);
      EXPECT_NE(output.find(expected), std::string::npos) << expected << "\n" << output;
      ++resumes_seen;
    }
    // Where the kill landed, from what it left unfinished (names carry the process id).
    for (const std::string& name : leftovers(out)) {
      if (!left_before.insert(name).second) continue;  // left by an earlier kill, not cleaned up yet
      torn_checkpoints += name.rfind(".tmp-checkpoint-", 0) == 0;
      torn_removals += name.rfind(".old-checkpoint-", 0) == 0;
      torn_files += name.find("checkpoint-") == std::string::npos;
    }
    // Every checkpoint is complete, loads, and is the uninterrupted run's of that step.
    for (const std::string& name : checkpoints(out)) {
      expect_loadable_checkpoint(out + "/" + name);
      expect_same_files(out + "/" + name, path("ref/" + name));
    }
    // The metrics are the uninterrupted run's lines (the last may be torn), at least up to the checkpoint.
    const std::vector<std::string> m = lines(out + "/metrics.jsonl");
    for (size_t i = 0; i < m.size(); ++i) {
      const bool torn_last = i + 1 == m.size() && ref_metrics[i].rfind(m[i], 0) == 0;
      EXPECT_TRUE(m[i] == ref_metrics[i] || torn_last) << "metrics line " << i + 1 << ": " << m[i];
    }
    resume_point = latest_checkpoint(out);
    if (resume_point) {
      EXPECT_GE(int64_t(m.size()), read_trainer_state(*resume_point).step);
    }
    if (HasFatalFailure()) return;
  }

  // The 21st run is left to finish.
  std::vector<std::string> extra = cadence;
  extra.push_back("--resume");
  const std::string output = run("run", steps, extra);
  ASSERT_TRUE(resume_point);
  EXPECT_NE(output.find(fmt::format("resuming from {} (step", *resume_point)), std::string::npos) << output;
  expect_same_final("run", "ref", steps);
  // The kills did land inside checkpoint writes (which the unfinished folders they left show), and
  // those leftovers were cleaned up.
  EXPECT_GE(torn_checkpoints, 1);
  std::printf(
      "20 kills: %d inside a checkpoint write, %d while removing an old checkpoint, %d inside another file's "
      "write; %d resumes checked (a write takes %.1f ms here, the steps between two %.1f ms)\n",
      torn_checkpoints, torn_removals, torn_files, resumes_seen, 1e3 * times.write, 1e3 * times.between);
}

// A full disk while a checkpoint is saved (RLIMIT_FSIZE below the weights' size: writes fail with EFBIG
// as they would with ENOSPC): one error line naming the checkpoint, the file and the reason; the last
// checkpoint untouched and resumable. Then while the metrics are written.
TEST_F(TrainFaults, FullDiskWhileSavingKeepsTheLastCheckpoint) {
  const std::vector<std::string> cadence = {"--checkpoint-every", "1", "--eval-every", "2"};
  run("ref", 4, cadence);
  run("run", 2, cadence);  // checkpoints 1 and 2
  const std::string out = path("run"), last = out + "/checkpoint-00000002";
  const auto before = folder_files(last);
  std::vector<std::string> resume = cadence;
  resume.push_back("--resume");
  ChildSetup full_disk;
  full_disk.max_file_bytes = 64 * 1024;  // the weights are 100 kB, the metrics and JSON files much smaller
  SsmProcess p(train_args("run", 4, resume), path("full.log"), full_disk);
  EXPECT_EQ(p.exit_code(), 1) << p.output();
  expect_one_error(p.output(), {"cannot save checkpoint '" + out + "/checkpoint-00000003'", "model.safetensors",
                                "File too large", "the last complete checkpoint, '" + last + "', is intact"});
  EXPECT_TRUE(folder_files(last) == before);
  EXPECT_EQ(latest_checkpoint(out), last);
  EXPECT_EQ(leftovers(out), std::vector<std::string>{}) << "the failed save left its unfinished folder";
  run("run", 4, resume);
  expect_same_final("run", "ref", 4);

  // The disk fills while the metrics grow (1 kB: about ten lines, long before the first checkpoint).
  ChildSetup small_disk;
  small_disk.max_file_bytes = 1024;
  SsmProcess m(train_args("metrics", 40, {"--checkpoint-every", "1000", "--eval-every", "1000"}), path("m.log"),
               small_disk);
  EXPECT_EQ(m.exit_code(), 1) << m.output();
  expect_one_error(m.output(), {"cannot write '" + path("metrics") + "/metrics.jsonl': File too large"});
}

// The output folder becomes unwritable while the run saves. As root, permissions do not stop writes,
// so the trainer runs as `nobody` there; where a child cannot switch users, the folder is replaced by a
// file instead (a path whose parent is not a folder).
TEST_F(TrainFaults, UnwritableFolderWhileSavingKeepsTheLastCheckpoint) {
  const int steps = 8;
  const std::vector<std::string> cadence = {"--checkpoint-every", "1",  "--eval-every", "4",
                                            "--keep-checkpoints", "100"};
  run("ref", steps, cadence);
  const std::string out = path("run");
  fs::create_directories(out);
  ChildSetup user;
  const bool by_permissions = ::geteuid() != 0 || test::can_run_as(65534);
  if (::geteuid() == 0 && by_permissions) {
    user.uid = 65534;
    ASSERT_EQ(::chown(out.c_str(), user.uid, user.uid), 0);
  }
  FolderEvents events(out);
  SsmProcess p(train_args("run", steps, cadence), path("unwritable.log"), user);
  ASSERT_TRUE(events.wait_for("checkpoint-", 2, p)) << p.output();
  p.signal(SIGSTOP);
  if (by_permissions) {
    ASSERT_EQ(::chmod(out.c_str(), 0555), 0);
  } else {
    fs::rename(out, out + ".away");
    write_text_file(out, "not a folder");
  }
  p.signal(SIGCONT);
  EXPECT_EQ(p.exit_code(), 1) << p.output();
  // Restored, and the run continues from the last complete checkpoint, the one the error named.
  if (by_permissions) {
    ASSERT_EQ(::chmod(out.c_str(), 0755), 0);
  } else {
    fs::remove(out);
    fs::rename(out + ".away", out);
  }
  const std::optional<std::string> last = latest_checkpoint(out);
  ASSERT_TRUE(last);
  if (by_permissions) {
    expect_one_error(p.output(), {"cannot save checkpoint '" + out + "/checkpoint-", "Permission denied",
                                  "the last complete checkpoint, '" + *last + "', is intact"});
  } else {
    expect_one_error(p.output(), {"cannot save checkpoint '" + out + "/checkpoint-", "Not a directory"});
  }
  expect_loadable_checkpoint(*last);
  expect_same_files(*last, path("ref/" + fs::path(*last).filename().string()));
  std::vector<std::string> resume = cadence;
  resume.push_back("--resume");
  const std::string output = run("run", steps, resume, user);
  EXPECT_NE(output.find(fmt::format("resuming from {} (step", *last)), std::string::npos) << output;
  expect_same_final("run", "ref", steps);
}

// SIGTERM, SIGINT: the step finishes, a checkpoint of it is written, one line says where, the exit code is
// 128 + the signal; --resume ends where the uninterrupted run does. Two signals: out at once.
TEST_F(TrainFaults, SigtermAndSigintStopWithACheckpoint) {
  const int steps = 200;
  const std::vector<std::string> cadence = {"--eval-every", "50"};  // checkpoints at 50, 100, 150, 200
  run("ref", steps, cadence);
  struct Case {
    std::string name;
    std::vector<int> signals;
  };
  for (const Case& c : {Case{"sigterm", {SIGTERM}}, Case{"sigint", {SIGINT}}, Case{"twice", {SIGINT, SIGTERM}}}) {
    SCOPED_TRACE(c.name);
    const std::string out = path(c.name);
    SsmProcess p(train_args(c.name, steps, cadence), path(c.name + ".log"));
    // Stopped a few steps in, signalled, continued: the signals arrive together, mid-run.
    while (p.running() && lines(out + "/metrics.jsonl").size() < 5) test::sleep_seconds(0.001);
    p.signal(SIGSTOP);
    const int64_t steps_logged = int64_t(lines(out + "/metrics.jsonl").size());
    for (int s : c.signals) p.signal(s);
    p.signal(SIGCONT);
    const int code = p.exit_code();
    const std::string output = p.output();
    EXPECT_NE(output.find("signal again to quit at once"), std::string::npos) << output;
    if (c.signals.size() == 2) {
      EXPECT_TRUE(code == 130 || code == 143) << code << "\n" << output;
      EXPECT_EQ(output.find("stopped at step"), std::string::npos) << output;
    } else {
      EXPECT_EQ(code, 128 + c.signals[0]) << output;
      std::smatch m;
      ASSERT_TRUE(std::regex_search(output, m,
                                    std::regex("(SIG[A-Z]+): stopped at step (\\d+); checkpoint (\\S+) "
                                               "\\(continue with --resume\\)\n")))
          << output;
      EXPECT_EQ(m[1].str(), c.signals[0] == SIGTERM ? "SIGTERM" : "SIGINT");
      const int64_t stopped_at = std::stoll(m[2].str());
      EXPECT_TRUE(stopped_at == steps_logged || stopped_at == steps_logged + 1) << stopped_at << " " << steps_logged;
      EXPECT_EQ(m[3].str(), fmt::format("{}/checkpoint-{:08d}", out, stopped_at));
      EXPECT_EQ(latest_checkpoint(out), m[3].str());
      expect_loadable_checkpoint(m[3].str());
      EXPECT_FALSE(fs::exists(out + "/model.safetensors")) << "a stopped run wrote the final model";
    }
    std::vector<std::string> resume = cadence;
    resume.push_back("--resume");
    run(c.name, steps, resume);
    expect_same_final(c.name, "ref", steps);
  }
}

// Two runs on one folder would remove each other's checkpoints and temporaries: the second is refused.
TEST_F(TrainFaults, ASecondRunOnTheFolderIsRefused) {
  fs::create_directories(path("run"));
  const FolderLock held(path("run"), "the test holds it");
  SsmProcess p(train_args("run", 2, {}), path("second.log"));
  EXPECT_EQ(p.exit_code(), 1) << p.output();
  expect_one_error(p.output(),
                   {"'" + path("run") + "' is in use by another process (an ssm train writes its checkpoints there)"});
}

}  // namespace
}  // namespace ssm
