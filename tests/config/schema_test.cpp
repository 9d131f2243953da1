// Schema validation: every kind of issue, with its line:column and key path.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "neat/config/schema.hpp"

namespace neat::config {
namespace {

// A small pipeline-like schema exercising every node kind.
Schema pipeline_schema() {
  Schema stage = Schema::map();
  stage.required("name", Schema::string(), "Stage name.");
  stage.optional("weight", Schema::number(0.0, 1.0), "Share of the budget.");
  Schema s = Schema::map().doc("Test pipeline.");
  s.required("endpoint", Schema::string(), "Bus address.");
  s.required("threads", Schema::integer(1, 1024), "Worker threads.");
  s.optional("mode", Schema::one_of({"embedded", "process"}), "How nodes run.");
  s.optional("verbose", Schema::boolean(), "Log more.");
  s.optional("budget", Schema::bytes(1024), "Memory budget.");
  s.optional("stages", Schema::list(stage, 1), "Processing stages.");
  s.optional("labels", Schema::dict(Schema::integer()), "Free-form counters.");
  s.optional("extra", Schema::any(), "Anything.");
  return s;
}

std::vector<Issue> issues_of(const std::string& text) {
  try {
    load_string(text, pipeline_schema(), "test.yaml");
  } catch (const ConfigError& e) {
    return e.issues();
  }
  return {};
}

Issue single_issue(const std::string& text) {
  const std::vector<Issue> issues = issues_of(text);
  EXPECT_EQ(issues.size(), 1u) << format_issues(issues);
  return issues.empty() ? Issue{} : issues.front();
}

TEST(Schema, ValidDocumentPasses) {
  const std::string text =
      "endpoint: inproc://bus\n"
      "threads: 4\n"
      "mode: process\n"
      "verbose: yes\n"
      "budget: 512MiB\n"
      "stages:\n"
      "  - name: a\n"
      "    weight: 0.5\n"
      "  - name: b\n"
      "labels: {x: 1, y: 2}\n"
      "extra: [1, {a: b}]\n";
  const YAML::Node node = load_string(text, pipeline_schema(), "ok.yaml");
  EXPECT_EQ(node["threads"].as<int>(), 4);
  EXPECT_TRUE(validate(node, pipeline_schema(), "ok.yaml").empty());
}

TEST(Schema, NumberAcceptsIntegers) {
  EXPECT_TRUE(issues_of("endpoint: e\nthreads: 1\nstages: [{name: a, weight: 1}]\n").empty());
}

TEST(Schema, UnknownKeySuggestsClosestKnownKey) {
  const Issue issue = single_issue("endpiont: tcp://h:1\nthreads: 2\nendpoint: x\n");
  EXPECT_EQ(issue.line, 1);
  EXPECT_EQ(issue.column, 1);
  EXPECT_EQ(issue.path, "endpiont");
  EXPECT_NE(issue.message.find("unknown key 'endpiont'"), std::string::npos) << issue.message;
  EXPECT_NE(issue.message.find("did you mean 'endpoint'?"), std::string::npos) << issue.message;
}

TEST(Schema, UnknownKeyFarFromAllKeysListsKnownKeys) {
  const Issue issue = single_issue("endpoint: x\nthreads: 2\nzzzzzzzz: 1\n");
  EXPECT_EQ(issue.line, 3);
  EXPECT_NE(issue.message.find("known keys: endpoint, threads"), std::string::npos)
      << issue.message;
}

TEST(Schema, MissingRequiredKeyReportedAtItsMap) {
  const Issue issue = single_issue("endpoint: x\nstages:\n  - weight: 0.5\nthreads: 1\n");
  EXPECT_EQ(issue.path, "stages[0].name");
  EXPECT_EQ(issue.line, 3);
  EXPECT_EQ(issue.column, 5);
  EXPECT_EQ(issue.message, "missing required key 'name'");
}

TEST(Schema, WrongTypeNamesExpectedAndActual) {
  const Issue issue = single_issue("endpoint: x\nthreads: abc\n");
  EXPECT_EQ(issue.line, 2);
  EXPECT_EQ(issue.column, 10);
  EXPECT_EQ(issue.path, "threads");
  EXPECT_EQ(issue.message, "expected integer, got string 'abc'");
}

TEST(Schema, QuotedNumberIsAString) {
  const Issue issue = single_issue("endpoint: x\nthreads: \"4\"\n");
  EXPECT_EQ(issue.message, "expected integer, got string '4'");
}

TEST(Schema, FractionIsNotAnInteger) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1.5\n");
  EXPECT_EQ(issue.message, "expected integer, got number 1.5");
}

TEST(Schema, NullValueReportedAtItsKey) {
  const Issue issue = single_issue("endpoint: x\nthreads:\nmode: embedded\n");
  EXPECT_EQ(issue.line, 2);
  EXPECT_EQ(issue.column, 1);
  EXPECT_EQ(issue.message, "expected integer, got null (no value)");
}

TEST(Schema, MapWhereScalarExpected) {
  const Issue issue = single_issue("endpoint: {a: 1}\nthreads: 1\n");
  EXPECT_EQ(issue.path, "endpoint");
  EXPECT_EQ(issue.message, "expected string, got a map");
}

TEST(Schema, IntegerAboveMaximum) {
  const Issue issue = single_issue("endpoint: x\nthreads: 3000\n");
  EXPECT_EQ(issue.line, 2);
  EXPECT_EQ(issue.column, 10);
  EXPECT_EQ(issue.message, "3000 is above the maximum 1024");
}

TEST(Schema, IntegerBelowMinimum) {
  const Issue issue = single_issue("endpoint: x\nthreads: 0\n");
  EXPECT_EQ(issue.message, "0 is below the minimum 1");
}

TEST(Schema, NumberOutOfRangeInListItem) {
  const Issue issue =
      single_issue("endpoint: x\nthreads: 1\nstages:\n  - name: a\n  - name: b\n    weight: 1.5\n");
  EXPECT_EQ(issue.path, "stages[1].weight");
  EXPECT_EQ(issue.line, 6);
  EXPECT_EQ(issue.column, 13);
  EXPECT_EQ(issue.message, "1.5 is above the maximum 1");
}

TEST(Schema, EnumMismatchListsAllowedValues) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nmode: proces\n");
  EXPECT_EQ(issue.line, 3);
  EXPECT_EQ(issue.column, 7);
  EXPECT_EQ(issue.path, "mode");
  EXPECT_EQ(issue.message, "'proces' is not one of: embedded, process (did you mean 'process'?)");
}

TEST(Schema, BooleanRejectsOtherWords) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nverbose: maybe\n");
  EXPECT_EQ(issue.message, "expected boolean, got string 'maybe'");
}

TEST(Schema, BadByteSizeExplainsUnit) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nbudget: 12XB\n");
  EXPECT_EQ(issue.path, "budget");
  EXPECT_NE(issue.message.find("unknown unit 'XB'"), std::string::npos) << issue.message;
}

TEST(Schema, ByteSizeBelowMinimum) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nbudget: 10B\n");
  EXPECT_EQ(issue.message, "10B is below the minimum 1 KiB");
}

TEST(Schema, ListTooShort) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nstages: []\n");
  EXPECT_EQ(issue.path, "stages");
  EXPECT_EQ(issue.message, "list has 0 item(s), needs at least 1");
}

TEST(Schema, DictValuesAreChecked) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nlabels:\n  a: 1\n  b: two\n");
  EXPECT_EQ(issue.path, "labels.b");
  EXPECT_EQ(issue.line, 5);
  EXPECT_EQ(issue.column, 6);
}

TEST(Schema, DuplicateKeyReported) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\nthreads: 2\n");
  EXPECT_EQ(issue.line, 3);
  EXPECT_EQ(issue.path, "threads");
  EXPECT_EQ(issue.message, "duplicate key 'threads' (first at line 2)");
}

TEST(Schema, EmptyDocumentReported) {
  const Issue issue = single_issue("");
  EXPECT_EQ(issue.line, 0);
  EXPECT_EQ(issue.message, "the document is empty; expected map");
  EXPECT_EQ(issue.str(), "test.yaml: the document is empty; expected map");
}

TEST(Schema, AllIssuesReportedInDocumentOrder) {
  const std::vector<Issue> issues = issues_of(
      "endpint: x\n"
      "threads: -4\n"
      "mode: fast\n"
      "stages:\n"
      "  - name: [1]\n"
      "    weight: heavy\n");
  ASSERT_EQ(issues.size(), 6u) << format_issues(issues);
  EXPECT_EQ(issues[0].path, "endpint");
  EXPECT_EQ(issues[1].path, "threads");
  EXPECT_EQ(issues[2].path, "mode");
  EXPECT_EQ(issues[3].path, "stages[0].name");
  EXPECT_EQ(issues[4].path, "stages[0].weight");
  EXPECT_EQ(issues[5].path, "endpoint");
  EXPECT_EQ(issues[5].message, "missing required key 'endpoint'");
  EXPECT_EQ(issues[4].line, 6);
}

TEST(Schema, IssueStrHasFileLineColumnPathMessage) {
  const Issue issue = single_issue("endpoint: x\nthreads: 3000\n");
  EXPECT_EQ(issue.str(), "test.yaml:2:10: threads: 3000 is above the maximum 1024");
}

TEST(Schema, ConfigErrorWhatListsEveryIssue) {
  try {
    load_string("threads: 0\nmode: x\n", pipeline_schema(), "t.yaml");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("t.yaml:1:10: threads:"), std::string::npos) << what;
    EXPECT_NE(what.find("t.yaml:2:7: mode:"), std::string::npos) << what;
    EXPECT_NE(what.find("missing required key 'endpoint'"), std::string::npos) << what;
  }
}

TEST(Schema, BrokenYamlReportedWithPosition) {
  const Issue issue = single_issue("endpoint: x\nthreads: [1, 2\nmode: embedded\n");
  EXPECT_GT(issue.line, 0);
  EXPECT_GT(issue.column, 0);
  EXPECT_NE(issue.message.find("invalid YAML"), std::string::npos) << issue.message;
  const Issue bad_map = single_issue("a: b: c\n");
  EXPECT_EQ(bad_map.line, 1);
  EXPECT_EQ(bad_map.column, 5);
}

TEST(Schema, SeveralDocumentsRejected) {
  const Issue issue = single_issue("endpoint: x\nthreads: 1\n---\nendpoint: y\n");
  EXPECT_NE(issue.message.find("expected one YAML document, found 2"), std::string::npos);
}

TEST(Schema, CustomCheckRunsAfterTypeCheck) {
  Schema s = Schema::map();
  s.required("even", Schema::integer().check([](const YAML::Node& n) -> std::optional<std::string> {
    if (n.as<int>() % 2 != 0) return "must be even";
    return std::nullopt;
  }));
  const std::vector<Issue> odd = validate(YAML::Load("even: 3"), s, "c.yaml");
  ASSERT_EQ(odd.size(), 1u);
  EXPECT_EQ(odd[0].str(), "c.yaml:1:7: even: must be even");
  const std::vector<Issue> wrong = validate(YAML::Load("even: x"), s, "c.yaml");
  ASSERT_EQ(wrong.size(), 1u);
  EXPECT_EQ(wrong[0].message, "expected integer, got string 'x'");
}

TEST(Schema, MissingFileIsAConfigError) {
  try {
    load_file("/nonexistent/neat/file.yaml", pipeline_schema());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.issues().size(), 1u);
    EXPECT_EQ(e.issues()[0].file, "/nonexistent/neat/file.yaml");
    EXPECT_NE(e.issues()[0].message.find("no such file"), std::string::npos);
  }
}

TEST(Schema, LoadFileReportsFileName) {
  const std::filesystem::path file = std::filesystem::temp_directory_path() /
                                     ("neat_schema_test_" + std::to_string(::getpid()) + ".yaml");
  {
    std::ofstream out(file);
    out << "endpoint: x\nthreads: 5000\n";
  }
  try {
    load_file(file, pipeline_schema());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.issues().size(), 1u);
    EXPECT_EQ(e.issues()[0].str(),
              file.string() + ":2:10: threads: 5000 is above the maximum 1024");
  }
  std::filesystem::remove(file);
}

TEST(Schema, DescribeListsEveryKey) {
  const std::string text = pipeline_schema().describe();
  for (const char* key : {"`endpoint`", "`threads`", "`mode`", "`verbose`", "`budget`", "`stages`",
                          "`stages[].name`", "`stages[].weight`", "`labels`", "`extra`"}) {
    EXPECT_NE(text.find(key), std::string::npos) << key << "\n" << text;
  }
  EXPECT_NE(text.find("1 .. 1024"), std::string::npos) << text;
  EXPECT_NE(text.find("embedded \\| process"), std::string::npos) << text;
  EXPECT_NE(text.find("Worker threads."), std::string::npos) << text;
  EXPECT_NE(text.find("Test pipeline."), std::string::npos) << text;
}

TEST(Schema, CopiesAreIndependent) {
  Schema a = Schema::map();
  a.required("x", Schema::integer());
  Schema b = a;
  b.required("y", Schema::integer());
  EXPECT_EQ(a.fields().size(), 1u);
  EXPECT_EQ(b.fields().size(), 2u);
}

TEST(Schema, DeclaringKeysOnNonMapThrows) {
  Schema s = Schema::string();
  EXPECT_THROW(s.required("x", Schema::integer()), std::logic_error);
  Schema m = Schema::map();
  m.required("x", Schema::integer());
  EXPECT_THROW(m.optional("x", Schema::integer()), std::logic_error);
}

TEST(GetOr, ReturnsValueOrFallback) {
  const YAML::Node node = YAML::Load("a: 3\nb:\n");
  EXPECT_EQ(get_or<int>(node, "a", 7), 3);
  EXPECT_EQ(get_or<int>(node, "b", 7), 7);
  EXPECT_EQ(get_or<int>(node, "c", 7), 7);
  EXPECT_EQ(get_or<std::string>(YAML::Load("[1]"), "a", "x"), "x");
}

TEST(ClosestMatch, FindsTyposOnly) {
  EXPECT_EQ(closest_match("endpiont", {"endpoint", "threads"}), "endpoint");
  EXPECT_EQ(closest_match("thread", {"endpoint", "threads"}), "threads");
  EXPECT_EQ(closest_match("zzzz", {"endpoint", "threads"}), "");
}

}  // namespace
}  // namespace neat::config
