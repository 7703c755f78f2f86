package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/minimon/minimon/internal/monitor"
)

// operationsDoc is the runbook whose option table must cover every monitord flag.
var operationsDoc = filepath.Join("..", "..", "docs", "operations.md")

var flagCellRE = regexp.MustCompile("^`--([a-z0-9-]+)`$")

// noDefault is how the option table writes an empty default.
const noDefault = "(none)"

// optionRows parses the option table of docs/operations.md: rows "| `--flag` | default | `ENV`
// | meaning |", keyed by flag name, each value the row's cells (trimmed, without the pipes).
func optionRows(doc string) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		// Only a cell that is one flag opens a row of the option table; other tables (the
		// start-up checks) name flags inside longer text.
		m := flagCellRE.FindStringSubmatch(cells[0])
		if m == nil {
			continue
		}
		rows[m[1]] = cells
	}
	return rows
}

// docProblems lists every flag of fs that the option table does not document with its default
// and its MINIMON_ variable, and every table row that names no flag of fs (a removed flag).
func docProblems(doc string, fs *pflag.FlagSet) []string {
	rows := optionRows(doc)
	var problems []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		row, ok := rows[f.Name]
		if !ok {
			problems = append(problems, "--"+f.Name+": no row in the option table")
			return
		}
		want := noDefault
		if f.DefValue != "" {
			want = "`" + f.DefValue + "`"
		}
		if len(row) < 4 {
			problems = append(problems, "--"+f.Name+": row has fewer than 4 cells")
			return
		}
		if row[1] != want {
			problems = append(problems, "--"+f.Name+": default cell "+row[1]+", want "+want)
		}
		if env := "`" + monitor.EnvName(f.Name) + "`"; row[2] != env {
			problems = append(problems, "--"+f.Name+": environment cell "+row[2]+", want "+env)
		}
	})
	for name := range rows {
		if fs.Lookup(name) == nil {
			problems = append(problems, "--"+name+": documented but monitord has no such flag")
		}
	}
	slices.Sort(problems)
	return problems
}

func readOperationsDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatalf("read the runbook: %v", err)
	}
	return string(b)
}

// configFlags is the monitor's flag set exactly as the daemon builds it from the defaults.
func configFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("monitord", pflag.ContinueOnError)
	cfg := monitor.DefaultConfig()
	cfg.AddFlags(fs)
	return fs
}

// daemonFlags is every flag of the monitord command: configFlags plus the daemon's own
// (--log-format).
func daemonFlags() *pflag.FlagSet {
	fs := configFlags()
	fs.String(flagLogFormat, "json", "")
	return fs
}

// TestOperationsDocCoversEveryFlag fails when a flag is added, removed, renamed or given a new
// default without the option table of docs/operations.md following.
func TestOperationsDocCoversEveryFlag(t *testing.T) {
	doc := readOperationsDoc(t)

	// The monitor's own options, and the daemon's (--log-format) on top: the root command's
	// flag set holds both.
	cfgFlags := configFlags()
	root := newRootCmd(env{stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }})
	all := root.Flags()
	cfgFlags.VisitAll(func(f *pflag.Flag) {
		if all.Lookup(f.Name) == nil {
			t.Errorf("--%s of Config.AddFlags is missing from the monitord command", f.Name)
		}
	})
	for _, p := range docProblems(doc, all) {
		t.Error(p)
	}
	if n := len(optionRows(doc)); n < 20 {
		t.Errorf("the option table has %d rows; the parser found too few to be checking anything", n)
	}

	// The offline subcommands' flags are not in the table but must be mentioned.
	for _, sub := range root.Commands() {
		sub.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
				t.Errorf("monitord %s --%s is not mentioned in %s", sub.Name(), f.Name, operationsDoc)
			}
		})
	}
}

// TestOperationsDocCheckerCatches proves the checker fails on what it is meant to catch: an
// undocumented new flag, a changed default, a removed flag.
func TestOperationsDocCheckerCatches(t *testing.T) {
	doc := readOperationsDoc(t)

	fs := daemonFlags()
	fs.Duration("mon-new-option", time.Second, "an option nobody documented")
	if got := docProblems(doc, fs); len(got) != 1 || !strings.Contains(got[0], "--mon-new-option: no row") {
		t.Errorf("undocumented flag: problems %q", got)
	}

	fs = daemonFlags()
	if err := fs.Lookup(monitor.FlagMonLease).Value.Set("2s"); err != nil {
		t.Fatal(err)
	}
	fs.Lookup(monitor.FlagMonLease).DefValue = "2s"
	if got := docProblems(doc, fs); len(got) != 1 || !strings.Contains(got[0], "--mon-lease: default cell `500ms`") {
		t.Errorf("changed default: problems %q", got)
	}

	fs = pflag.NewFlagSet("fewer", pflag.ContinueOnError)
	fs.String(monitor.FlagName, "", "")
	got := docProblems(doc, fs)
	if !slices.Contains(got, "--mon-lease: documented but monitord has no such flag") {
		t.Errorf("removed flag: problems %q", got)
	}
}
